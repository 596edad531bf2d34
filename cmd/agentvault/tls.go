package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tlsFiles are the PEM files the server's TLS comes from.
type tlsFiles struct {
	cert, key string
	clientCA  string // optional: require client certificates signed by these CAs
}

func (f tlsFiles) enabled() bool { return f.cert != "" || f.key != "" || f.clientCA != "" }

func (f tlsFiles) check() error {
	if f.enabled() && (f.cert == "" || f.key == "") {
		return errors.New("TLS needs both --tls-cert-file and --tls-key-file (--tls-client-ca-file adds client certificates on top)")
	}
	return nil
}

// tlsReloader holds the server's TLS configuration, built from tlsFiles and
// rebuilt on reload (SIGHUP), so certificates and client CAs rotate without
// a restart. A reload that fails keeps the configuration in use.
type tlsReloader struct {
	files  tlsFiles
	log    *slog.Logger
	cfg    atomic.Pointer[tls.Config]
	expiry prometheus.Gauge
}

func newTLSReloader(files tlsFiles, log *slog.Logger, reg prometheus.Registerer) (*tlsReloader, error) {
	r := &tlsReloader{files: files, log: log, expiry: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentvault_tls_certificate_expiry_timestamp_seconds",
		Help: "When the server's TLS certificate expires (Unix time), for alerts before it does.",
	})}
	if err := r.reload(); err != nil {
		return nil, err
	}
	reg.MustRegister(r.expiry)
	return r, nil
}

// serverConfig is the http.Server's TLS configuration: every handshake
// takes the configuration loaded last.
func (r *tlsReloader) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.cfg.Load(), nil
		},
	}
}

func (r *tlsReloader) reload() error {
	cert, err := tls.LoadX509KeyPair(r.files.cert, r.files.key)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if r.files.clientCA != "" {
		pool, err := loadCertPool(r.files.clientCA)
		if err != nil {
			return fmt.Errorf("--tls-client-ca-file: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	leaf := cert.Leaf // LoadX509KeyPair parses it (Go 1.23 on)
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
	}
	r.cfg.Store(cfg)
	r.expiry.Set(float64(leaf.NotAfter.Unix()))
	attrs := []any{"subject", leaf.Subject.String(), "dns_names", leaf.DNSNames, "not_after", leaf.NotAfter.UTC(), "client_certificates", r.files.clientCA != ""}
	switch left := time.Until(leaf.NotAfter); {
	case left <= 0:
		r.log.Error("TLS certificate loaded, and it has EXPIRED: clients will refuse it", attrs...)
	case left < 14*24*time.Hour:
		r.log.Warn("TLS certificate loaded; it expires in under 14 days", attrs...)
	default:
		r.log.Info("TLS certificate loaded", attrs...)
	}
	return nil
}

// loadCertPool reads PEM certificates into a pool.
func loadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// strictTransport tells browsers (the console) to use only HTTPS for this
// host from now on.
func strictTransport(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

// isLoopback reports whether a listener's address is reachable only from
// this machine.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
