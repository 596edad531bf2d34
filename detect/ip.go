package detect

import "net/netip"

// parseIPv6 reports whether s is an IPv6 address.
func parseIPv6(s string) (bool, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false, err
	}
	return a.Is6(), nil
}
