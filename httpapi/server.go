package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentvault/agentvault/vault"
)

// Config wires the HTTP API.
type Config struct {
	Service *vault.Service
	Logger  *slog.Logger
	// Registry receives HTTP metrics and is served on /metrics.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds every request body (default 4 MiB).
	MaxBodyBytes int64
}

// DefaultMaxBodyBytes is the request body limit unless configured.
const DefaultMaxBodyBytes = 4 << 20

// Server is the HTTP API.
type Server struct {
	cfg    Config
	svc    *vault.Service
	log    *slog.Logger
	router *mux.Router

	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	backupDone   prometheus.Gauge
}

// New builds the API's handler.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{
		cfg: cfg,
		svc: cfg.Service,
		log: cfg.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentvault_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agentvault_http_request_seconds", Help: "HTTP request latency by route and method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"route", "method"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentvault_http_auth_failures_total",
			Help: "Requests refused by authentication or role checks: missing_token, invalid_token (unknown or revoked) or forbidden (wrong role).",
		}, []string{"reason"}),
		backupDone: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentvault_backup_last_success_timestamp_seconds",
			Help: "When this process last finished streaming a backup (GET /v1/backup); 0 if it has not since it started.",
		}),
	}
	cfg.Registry.MustRegister(s.requests, s.latency, s.authFailures, s.backupDone)

	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no_route", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	methodNotAllowed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
	})
	r.MethodNotAllowedHandler = methodNotAllowed
	// The router tries routes in order, each path a regular expression:
	// the data plane's routes come first, so that its requests do not
	// pay for matching the control plane's. No two routes' paths and
	// methods both match one request, so the order changes nothing else.
	r.Handle("/v1/collections/{collection}/records", s.auth(s.createRecords, vault.RoleWriter)).Methods(http.MethodPost)
	r.Handle("/v1/collections/{collection}/records", s.auth(s.listRecords, vault.RoleWriter, vault.RoleAgent)).Methods(http.MethodGet)
	r.Handle("/v1/collections/{collection}/records/search", s.auth(s.searchRecords, vault.RoleWriter, vault.RoleAgent)).Methods(http.MethodPost)
	r.Handle("/v1/collections/{collection}/records/{id}", s.auth(s.getRecord, vault.RoleWriter, vault.RoleAgent)).Methods(http.MethodGet)
	r.Handle("/v1/collections/{collection}/records/{id}", s.auth(s.deleteRecord, vault.RoleWriter)).Methods(http.MethodDelete)
	r.Handle("/v1/collections/{collection}/records/{id}", s.auth(s.updateRecord, vault.RoleWriter)).Methods(http.MethodPatch)
	r.Handle("/v1/detokenize", s.auth(s.detokenize, vault.RoleAgent)).Methods(http.MethodPost)
	r.Handle("/v1/collections/{collection}", s.auth(s.getCollection)).Methods(http.MethodGet)

	r.HandleFunc("/healthz", s.healthz).Methods(http.MethodGet)
	r.HandleFunc("/readyz", s.readyz).Methods(http.MethodGet)
	r.HandleFunc("/v1/openapi.json", s.openAPIDoc).Methods(http.MethodGet)
	r.Handle("/v1/redact", s.auth(s.redact, vault.RoleWriter, vault.RoleAgent)).Methods(http.MethodPost)
	r.Handle("/v1/restore", s.auth(s.restore, vault.RoleAgent)).Methods(http.MethodPost)
	r.Handle("/mcp", s.mcpHandler()).Methods(http.MethodGet, http.MethodPost, http.MethodDelete)
	r.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	r.Handle("/v1/principals", s.auth(s.createPrincipal, vault.RoleAdmin)).Methods(http.MethodPost)
	r.Handle("/v1/principals", s.auth(s.listPrincipals, vault.RoleAdmin, vault.RoleAuditor)).Methods(http.MethodGet)
	r.Handle("/v1/me", s.auth(s.me)).Methods(http.MethodGet)
	r.Handle("/v1/principals/{id}", s.auth(s.revokePrincipal, vault.RoleAdmin)).Methods(http.MethodDelete)

	r.Handle("/v1/collections", s.auth(s.createCollection, vault.RoleAdmin)).Methods(http.MethodPost)
	r.Handle("/v1/collections", s.auth(s.listCollections)).Methods(http.MethodGet)

	r.Handle("/v1/grants", s.auth(s.createGrant, vault.RoleAdmin)).Methods(http.MethodPost)
	r.Handle("/v1/grants", s.auth(s.listGrants, vault.RoleAdmin)).Methods(http.MethodGet)
	r.Handle("/v1/grants/{id}", s.auth(s.revokeGrant, vault.RoleAdmin)).Methods(http.MethodDelete)
	r.Handle("/v1/approvals", s.auth(s.listApprovals, vault.RoleApprover, vault.RoleAgent)).Methods(http.MethodGet)
	r.Handle("/v1/approvals/{id}", s.auth(s.getApproval, vault.RoleApprover, vault.RoleAgent)).Methods(http.MethodGet)
	r.Handle("/v1/approvals/{id}/approve", s.auth(s.decideApproval(true), vault.RoleApprover)).Methods(http.MethodPost)
	r.Handle("/v1/approvals/{id}/deny", s.auth(s.decideApproval(false), vault.RoleApprover)).Methods(http.MethodPost)
	r.Handle("/v1/audit", s.auth(s.listAudit, vault.RoleAuditor)).Methods(http.MethodGet)
	r.Handle("/v1/audit/verify", s.auth(s.verifyAudit, vault.RoleAuditor)).Methods(http.MethodGet)
	r.Handle("/v1/audit/pubkey", s.auth(s.auditPublicKey, vault.RoleAuditor)).Methods(http.MethodGet)
	r.Handle("/v1/audit/checkpoint", s.auth(s.auditCheckpoint, vault.RoleAuditor)).Methods(http.MethodGet)
	r.Handle("/v1/keys", s.auth(s.keyStatus, vault.RoleOperator)).Methods(http.MethodGet)
	r.Handle("/v1/keys/rotate", s.auth(s.rotateKey, vault.RoleOperator)).Methods(http.MethodPost)
	r.Handle("/v1/keys/reencrypt", s.auth(s.reencrypt, vault.RoleOperator)).Methods(http.MethodPost)
	r.Handle("/v1/keys/disable", s.auth(s.retireKey(false), vault.RoleOperator)).Methods(http.MethodPost)
	r.Handle("/v1/keys/destroy", s.auth(s.retireKey(true), vault.RoleOperator)).Methods(http.MethodPost)
	r.Handle("/v1/jobs", s.auth(s.listJobs, vault.RoleOperator)).Methods(http.MethodGet)
	r.Handle("/v1/jobs/{id}", s.auth(s.getJob, vault.RoleOperator)).Methods(http.MethodGet)
	r.Handle("/v1/backup", s.auth(s.backup, vault.RoleOperator)).Methods(http.MethodGet)
	ui := uiHandler()
	r.PathPrefix("/ui/").Handler(ui).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently)).Methods(http.MethodGet)
	r.Handle("/", http.RedirectHandler("/ui/", http.StatusFound)).Methods(http.MethodGet)
	r.Use(s.observe)
	s.router = r
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v) // a deliberate abort: net/http drops the connection
			}
			s.log.Error("handler panic", "request_id", requestID(r), "panic", v)
			writeError(w, http.StatusInternalServerError, "internal", "internal error")
		}
	}()
	s.router.ServeHTTP(w, r)
}

type ctxKey int

const keyState ctxKey = 0

// reqState is what the middleware learns about a request: its id, set by
// observe, and its principal, set by auth.
type reqState struct {
	id        string
	principal *vault.Principal
}

func state(r *http.Request) *reqState {
	st, _ := r.Context().Value(keyState).(*reqState)
	if st == nil {
		return &reqState{}
	}
	return st
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

func requestID(r *http.Request) string { return state(r).id }

func principal(r *http.Request) *vault.Principal { return state(r).principal }

// meta is who is asking, for the audit log.
func meta(r *http.Request) vault.RequestMeta {
	m := vault.RequestMeta{Actor: principal(r), RequestID: requestID(r), RemoteAddr: r.RemoteAddr}
	// `agentvault mcp` says so on the calls it makes for an MCP client;
	// the audit entry records it as the caller reported it.
	if r.Header.Get(HeaderVia) == "mcp" {
		m.Via, m.Client = "mcp", clientName(r.Header.Get(HeaderClient))
	}
	return m
}

// Headers `agentvault mcp` sets on its calls.
const (
	HeaderVia    = "X-Agentvault-Via"
	HeaderClient = "X-Agentvault-Client"
)

// clientName keeps a reported client name/version if it is short,
// printable ASCII.
func clientName(s string) string {
	if len(s) > 100 {
		s = s[:100]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "unprintable"
		}
	}
	return s
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// observe assigns the request id and records metrics and one log line per
// request. It never logs bodies.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID.MatchString(id) {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		st := &reqState{id: id}
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), keyState, st))
		next.ServeHTTP(sw, r)
		route := routeOf(r)
		elapsed := time.Since(start)
		s.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status)).Inc()
		s.latency.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
		if route == "/metrics" || route == "/healthz" || route == "/readyz" || !s.log.Enabled(r.Context(), slog.LevelDebug) {
			return
		}
		s.log.Debug("request", "request_id", id, "method", r.Method, "route", route,
			"status", sw.status, "duration_ms", float64(elapsed.Microseconds())/1000, "principal_id", principalID(st.principal))
	})
}

// routeOf is the request's route template (never the path, which may
// hold ids), or "unmatched".
func routeOf(r *http.Request) string {
	if cur := mux.CurrentRoute(r); cur != nil {
		if t, err := cur.GetPathTemplate(); err == nil {
			return t
		}
	}
	return "unmatched"
}

func principalID(p *vault.Principal) string {
	if p != nil {
		return p.ID
	}
	return ""
}

// auth authenticates the bearer token and, when roles are given, requires
// one of them. Admins pass every role check; a reveal still needs a grant.
func (s *Server) auth(h http.HandlerFunc, roles ...vault.Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(authz, "Bearer ")
		if !ok || token == "" {
			s.authFailures.WithLabelValues("missing_token").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="agentvault"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "send Authorization: Bearer <api token>")
			return
		}
		p, err := s.svc.Authenticate(strings.TrimSpace(token))
		if err != nil {
			// Never the token itself, not even a prefix: a mistyped token
			// is often one character away from a real one.
			s.authFailures.WithLabelValues("invalid_token").Inc()
			s.log.Warn("authentication failed: unknown or revoked API token", "request_id", requestID(r),
				"method", r.Method, "route", routeOf(r), "remote_addr", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="agentvault", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "the API token is not valid or was revoked")
			return
		}
		if len(roles) > 0 && !p.Has(vault.RoleAdmin) && !slices.ContainsFunc(roles, p.Has) {
			s.authFailures.WithLabelValues("forbidden").Inc()
			s.log.Warn("forbidden: principal lacks the role", "request_id", requestID(r), "method", r.Method, "route", routeOf(r),
				"principal_id", p.ID, "principal", p.Name, "needs", joinRoles(roles), "remote_addr", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "forbidden", "this endpoint needs one of the roles "+joinRoles(roles))
			return
		}
		state(r).principal = p
		h(w, r)
	})
}

func joinRoles(roles []vault.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
