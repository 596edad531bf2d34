package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate for 127.0.0.1 (server) or a client, and
// returns its certificate and key as PEM.
func (ca *testCA) issue(t *testing.T, name string, serial int64, usage x509.ExtKeyUsage, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsClient trusts roots and presents cert (if any); every request opens a
// new connection, so it sees the server's current certificate.
func tlsClient(roots []byte, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// TestTLS serves HTTPS with client certificates from the real binary:
// only clients with a certificate from the configured CA get through (and
// then still need an API token), plain HTTP is refused, SIGHUP swaps the
// certificate without a restart, a broken reload keeps the old one, and
// the keys CLI connects with its CA and client certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "agentvault test CA"), newTestCA(t, "someone else's CA")
	notAfterA := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	certA, keyA := ca.issue(t, "agentvault-a", 10, x509.ExtKeyUsageServerAuth, notAfterA)
	certFile := writeFile(t, filepath.Join(dir, "server.pem"), certA)
	keyFile := writeFile(t, filepath.Join(dir, "server-key.pem"), keyA)
	caFile := writeFile(t, filepath.Join(dir, "ca.pem"), ca.pem)
	clientPEM, clientKey := ca.issue(t, "ops-laptop", 11, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	clientCert, err := tls.X509KeyPair(clientPEM, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	strangerPEM, strangerKey := other.issue(t, "stranger", 12, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	stranger, _ := tls.X509KeyPair(strangerPEM, strangerKey)

	s := start(t, filepath.Join(dir, "data"), adminEnv,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", caFile)
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("server URL %s: the listening log line does not say tls", s.url)
	}
	s.http = tlsClient(ca.pem, &clientCert)
	if me := s.must(200, "GET", "/v1/me", admin, nil); me["name"] != "bootstrap-admin" {
		t.Fatalf("/v1/me over mutual TLS: %v", me)
	}
	s.must(401, "GET", "/v1/me", "", nil) // a client certificate is not an API token

	peer := func(c *http.Client) (string, error) {
		resp, err := c.Get(s.url + "/healthz")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if hsts := resp.Header.Get("Strict-Transport-Security"); hsts != "max-age=31536000" {
			t.Errorf("Strict-Transport-Security %q", hsts)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName, nil
	}
	refused := []struct {
		name   string
		client *http.Client
	}{
		{"no client certificate", tlsClient(ca.pem, nil)},
		{"client certificate from another CA", tlsClient(ca.pem, &stranger)},
		{"server certificate not trusted", tlsClient(other.pem, &clientCert)},
	}
	for _, tc := range refused {
		if _, err := peer(tc.client); err == nil {
			t.Errorf("%s: request succeeded", tc.name)
		}
	}
	resp, err := testHTTP.Get("http://" + strings.TrimPrefix(s.url, "https://") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %d, want 400", resp.StatusCode)
	}

	expiry := func() int64 {
		t.Helper()
		resp, err := s.http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "agentvault_tls_certificate_expiry_timestamp_seconds "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return int64(f)
			}
		}
		return 0
	}
	if got := expiry(); got != notAfterA.Unix() {
		t.Errorf("certificate expiry metric %d, want %d", got, notAfterA.Unix())
	}

	// Rotate: new files, SIGHUP, and new connections get the new certificate.
	notAfterB := time.Now().Add(180 * 24 * time.Hour).Truncate(time.Second)
	certB, keyB := ca.issue(t, "agentvault-b", 20, x509.ExtKeyUsageServerAuth, notAfterB)
	writeFile(t, certFile, certB)
	writeFile(t, keyFile, keyB)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitPeer := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := peer(s.http)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("server certificate %q (%v), want %q after SIGHUP:\n%s", got, err, want, s.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitPeer("agentvault-b")
	if got := expiry(); got != notAfterB.Unix() {
		t.Errorf("certificate expiry metric after reload %d, want %d", got, notAfterB.Unix())
	}

	// A broken reload is logged and changes nothing.
	writeFile(t, certFile, []byte("not a certificate"))
	s.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logs(), "TLS reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload failure logged:\n%s", s.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitPeer("agentvault-b")

	// The keys CLI connects with the CA and client certificate, and only so.
	clientFile := writeFile(t, filepath.Join(dir, "client.pem"), clientPEM)
	clientKeyFile := writeFile(t, filepath.Join(dir, "client-key.pem"), clientKey)
	if out, errOut, err := s.cli(admin, "keys", "status", "--ca-file", caFile, "--client-cert", clientFile, "--client-key", clientKeyFile); err != nil || !strings.Contains(out, "KEK") {
		t.Errorf("keys status over mutual TLS: %v\n%s%s", err, out, errOut)
	}
	if _, errOut, err := s.cli(admin, "keys", "status", "--client-cert", clientFile, "--client-key", clientKeyFile); err == nil || !strings.Contains(errOut, "certificate") {
		t.Errorf("keys status without the CA: err %v, stderr %q", err, errOut)
	}
	s.stop()
}

// TestTLSFlags: half a TLS configuration, or unreadable files, stop the
// server at start with a message naming the problem.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	certPEM, keyPEM := ca.issue(t, "s", 2, x509.ExtKeyUsageServerAuth, time.Now().Add(time.Hour))
	cert := writeFile(t, filepath.Join(dir, "c.pem"), certPEM)
	key := writeFile(t, filepath.Join(dir, "k.pem"), keyPEM)
	junk := writeFile(t, filepath.Join(dir, "junk.pem"), []byte("junk"))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert-file", cert}, "both --tls-cert-file and --tls-key-file"},
		{"client CA alone", []string{"--tls-client-ca-file", cert}, "both --tls-cert-file and --tls-key-file"},
		{"key that is not PEM", []string{"--tls-cert-file", cert, "--tls-key-file", junk}, "TLS certificate"},
		{"client CA that is not PEM", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-client-ca-file", junk}, "no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data")}, tc.args...)
			cmd := command(2*time.Minute, avBinary, args...)
			cmd.Env = append(os.Environ(), adminEnv...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("err %v, output %q; want a failure mentioning %q", err, out, tc.want)
			}
		})
	}
}

// TestPlainHTTPWarning: listening beyond loopback without TLS is logged as
// a warning; on loopback it is not.
func TestPlainHTTPWarning(t *testing.T) {
	const warning = "serving plain HTTP on a non-loopback address"
	local := start(t, t.TempDir(), adminEnv)
	local.stop() // its whole log is in once it has exited
	if strings.Contains(local.logs(), warning) {
		t.Errorf("warning on loopback:\n%s", local.logs())
	}
	open := start(t, t.TempDir(), adminEnv, "--listen", "0.0.0.0:0")
	open.stop()
	if !strings.Contains(open.logs(), warning) {
		t.Errorf("no warning on 0.0.0.0:\n%s", open.logs())
	}
}
