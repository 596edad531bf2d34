package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// testHTTP is the tests' HTTP client: a request the server never answers
// fails its test after two minutes, with the server's stuck goroutines,
// instead of hanging the package until go test's timeout.
var testHTTP = &http.Client{Timeout: 2 * time.Minute}

// command is exec.Command for a process the test waits on: it is killed
// after limit, and once it has exited, waiting for its output ends 10 s
// later even if a process it started still holds the output's pipes.
func command(limit time.Duration, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 10 * time.Second
	go func() { <-ctx.Done(); cancel() }() // releases the context at its deadline (the process outlives this call)
	return cmd
}

// live is every agentvault server the tests have running.
var live sync.Map // *server -> struct{}

// startWatchdog arranges that, two minutes before go test's -timeout
// would kill the package with only its own goroutines, every server
// still running is asked for its goroutines (SIGQUIT), and those blocked
// for minutes are printed with the test that started the server.
func startWatchdog() {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	timeout, _ := f.Value.(flag.Getter).Get().(time.Duration)
	if timeout <= 3*time.Minute {
		return
	}
	time.AfterFunc(timeout-2*time.Minute, func() {
		live.Range(func(k, _ any) bool {
			s := k.(*server)
			fmt.Fprintf(os.Stderr, "== watchdog: %s's server %s is still running; its stuck goroutines:\n%s\n== end watchdog\n", s.t.Name(), s.url, s.stuck())
			return true
		})
	})
}

// stuck stops the server with SIGQUIT, which makes a Go program print
// every goroutine's stack, and returns those in agentvault's own code
// (all of them, to 400 lines, if none is), and the last lines it logged
// before.
func (s *server) stuck() string {
	before := s.logs()
	s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
	dump := strings.TrimPrefix(s.logs(), before)
	var ours []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "github.com/agentvault/agentvault/") {
			ours = append(ours, g)
		}
	}
	stacks := strings.Join(ours, "\n\n")
	if stacks == "" {
		all := strings.Split(dump, "\n")
		stacks = strings.Join(all[:min(len(all), 400)], "\n")
	}
	lines := strings.Split(strings.TrimSpace(before), "\n")
	return stacks + "\nlast lines logged before:\n" + strings.Join(lines[max(len(lines)-20, 0):], "\n")
}
