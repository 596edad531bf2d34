package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/agentvault/agentvault/vault"
)

const textUsage = `usage:
  agentvault redact [--types EMAIL,PHONE,clients.name,...] [--mask] [--collection C] < in > out
        replace sensitive values in standard input with vault tokens (or,
        with --mask, with their type), for pipelines: a writer's or agent's
        token in AGENTVAULT_TOKEN, the server in AGENTVAULT_URL
  agentvault restore --purpose P [--approval-id ID] < in > out   (or restore-text)
        put back the values of the tokens the agent may reveal; restore
        with --data-dir or --to-postgres restores a backup instead
`

// textCmd runs redact or restore over stdin and stdout.
func textCmd(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, textUsage) }
	c := clientFlags(fs)
	types := fs.String("types", "", "redact: only these entity types, comma-separated")
	mask := fs.Bool("mask", false, "redact: replace values with [TYPE] for good instead of tokens")
	coll := fs.String("collection", "", "redact: the text collection (default text)")
	purpose := fs.String("purpose", "", "restore: the purpose of the agent's grant")
	approval := fs.String("approval-id", "", "restore: redeem an approved request")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, textUsage)
		return errUsage
	}
	if c.token == "" {
		return errors.New("no token: set AGENTVAULT_TOKEN (or --token)")
	}
	if err := c.setupTLS(); err != nil {
		return err
	}
	in, err := io.ReadAll(io.LimitReader(stdin, vault.MaxTextBytes+1))
	if err != nil {
		return err
	}
	if name == "redact" {
		req := vault.RedactRequest{Text: string(in), Collection: *coll}
		if *types != "" {
			req.Types = strings.Split(*types, ",")
		}
		if *mask {
			req.Mode = "mask"
		}
		var out vault.RedactResult
		if err := c.call("POST", "/v1/redact", req, &out); err != nil {
			return err
		}
		_, err := io.WriteString(stdout, out.Text)
		return err
	}
	var out vault.TextRestoreResult
	if err := c.call("POST", "/v1/restore", vault.TextRestoreRequest{Text: string(in), Purpose: *purpose, ApprovalID: *approval}, &out); err != nil {
		return err
	}
	for _, r := range out.Results {
		if r.Status == vault.StatusPending {
			fmt.Fprintf(stderr, "%s: pending approval %s (%s)\n", r.Token, r.ApprovalID, r.Reason)
		}
	}
	_, err = io.WriteString(stdout, out.Text)
	return err
}
