// Command devvault runs a real HashiCorp Vault core, in memory, with the real
// Transit secrets engine behind Vault's real HTTP handler, on loopback. It
// exists only so agentvault's tests can exercise the Vault Transit KEK path
// against Vault's own code on a machine where no Vault binary can be
// installed. It is never shipped: Vault is BUSL-licensed.
//
// On start it initialises and unseals the core, mounts transit at
// "transit/", makes the AppRole auth method available (tests enable it),
// and prints one JSON line to stdout:
//
//	{"addr":"http://127.0.0.1:PORT","token":"<root token>"}
//
// With -token ID it also creates a root-policy token with that id and
// prints it as "token", so a test can start agentvault with a token
// before this server exists (Vault down at start).
//
// It exits on SIGINT or SIGTERM, or when its standard input closes (so a
// test that dies cannot leave it running).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/transit"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

// registry is the smallest plugin catalogue Vault's core accepts: it knows
// the transit secrets engine and the AppRole auth method, nothing else.
type registry struct{}

func (registry) Contains(name string, t consts.PluginType) bool {
	return (name == "transit" && t == consts.PluginTypeSecrets) || (name == "approle" && t == consts.PluginTypeCredential)
}

func (r registry) Get(name string, t consts.PluginType) (func() (interface{}, error), bool) {
	switch {
	case !r.Contains(name, t):
		return nil, false
	case name == "approle":
		return func() (interface{}, error) { return logical.Factory(approle.Factory), nil }, true
	}
	return func() (interface{}, error) { return logical.Factory(transit.Factory), nil }, true
}

func (registry) Keys(t consts.PluginType) []string {
	switch t {
	case consts.PluginTypeSecrets:
		return []string{"transit"}
	case consts.PluginTypeCredential:
		return []string{"approle"}
	}
	return nil
}

func (registry) DeprecationStatus(string, consts.PluginType) (consts.DeprecationStatus, bool) {
	return consts.Supported, true
}

func (registry) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	watchStdin := flag.Bool("exit-on-stdin-eof", true, "exit when standard input closes")
	verbose := flag.Bool("v", false, "log Vault's own messages to stderr")
	tokenID := flag.String("token", "", "also create a root-policy token with this id, and print it")
	flag.Parse()
	if err := run(*listen, *watchStdin, *verbose, *tokenID); err != nil {
		fmt.Fprintln(os.Stderr, "devvault:", err)
		os.Exit(1)
	}
}

func run(listen string, watchStdin, verbose bool, tokenID string) error {
	level := hclog.Error
	if verbose {
		level = hclog.Info
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "devvault", Level: level, Output: os.Stderr})

	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("parse -listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("refusing to listen on non-loopback address %q", listen)
	}

	phys, err := inmem.NewInmem(nil, logger)
	if err != nil {
		return fmt.Errorf("in-memory storage: %w", err)
	}
	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           phys,
		LogicalBackends:    map[string]logical.Factory{"transit": transit.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
		DisableMlock:       true,
		Logger:             logger,
		BuiltinRegistry:    registry{},
	})
	if err != nil {
		return fmt.Errorf("new core: %w", err)
	}
	ctx := context.Background()
	res, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig:    &vault.SealConfig{SecretShares: 1, SecretThreshold: 1},
		RecoveryConfig:   &vault.SealConfig{SecretShares: 1, SecretThreshold: 1},
		LegacyShamirSeal: true,
	})
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	for _, key := range res.SecretShares {
		if _, err := core.Unseal(key); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	handler := vaulthttp.Handler.Handler(&vault.HandlerProperties{
		Core:           core,
		ListenerConfig: &configutil.Listener{},
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)

	addr := "http://" + ln.Addr().String()
	token, err := setUp(addr, res.RootToken, tokenID)
	if err != nil {
		return err
	}
	line, _ := json.Marshal(map[string]string{"addr": addr, "token": token})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	stdinEOF := make(chan struct{})
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinEOF)
		}()
	}
	select {
	case <-stop:
	case <-stdinEOF:
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return core.Shutdown()
}

// setUp enables the transit engine at transit/ through the HTTP API, as
// an operator would, and creates the token with the given id if asked. It
// returns the token to print.
func setUp(addr, root, tokenID string) (string, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return "", err
	}
	client.SetToken(root)
	if err := client.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		return "", fmt.Errorf("mount transit: %w", err)
	}
	if tokenID == "" {
		return root, nil
	}
	if _, err := client.Auth().Token().Create(&api.TokenCreateRequest{ID: tokenID, Policies: []string{"root"}}); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return tokenID, nil
}
