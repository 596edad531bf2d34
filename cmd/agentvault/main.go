// Command agentvault is the agentvault server and its operator tools.
//
//	agentvault serve [flags]      run the server
//	agentvault audit verify|export|pubkey --data-dir DIR
//	agentvault keys status|rotate|reencrypt|disable|destroy
//	agentvault backup --out FILE | --check FILE
//	agentvault restore --data-dir DIR FILE
//	agentvault migrate --from-data-dir DIR --to-postgres URL
//	agentvault version            print the version
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

var version = "dev"

// errUsage reports a command line that was wrong; the usage was printed.
var errUsage = errors.New("usage")

const usage = `agentvault: a data privacy vault for AI-powered workflows

usage:
  agentvault serve [flags]   run the server (agentvault serve -h for flags)
  agentvault audit verify --data-dir DIR   check the audit chain offline
  agentvault audit export --data-dir DIR   write the audit log as JSON lines
  agentvault audit pubkey --data-dir DIR   print the checkpoint public key
  agentvault keys status|rotate|reencrypt|disable|destroy   key operations
                             against a running server (agentvault keys -h)
  agentvault backup --out FILE   online backup from a running server
  agentvault backup --check FILE check a backup file
  agentvault restore --data-dir DIR FILE   restore into a new data directory
  agentvault migrate --from-data-dir DIR --to-postgres URL   copy a stopped Badger vault into PostgreSQL
  agentvault mcp             MCP server over stdio for an agent host (AGENTVAULT_URL, AGENTVAULT_TOKEN)
  agentvault redact < in > out        replace sensitive values in text with vault tokens
  agentvault restore --purpose P < in > out   put back what the agent may see
                             (also restore-text; with --data-dir or --to-postgres, restore restores a backup)
  agentvault version         print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "audit":
		err = audit(os.Args[2:])
	case "keys":
		err = keysCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "backup":
		err = backupCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "restore":
		if restoresText(os.Args[2:]) {
			err = textCmd("restore", os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
		} else {
			err = restoreCmd(os.Args[2:], os.Stdout, os.Stderr)
		}
	case "migrate":
		err = runMigrate(os.Args[2:])
	case "mcp":
		err = mcpCmd(os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "redact", "restore-text":
		err = textCmd(strings.TrimSuffix(os.Args[1], "-text"), os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "version":
		fmt.Println(version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "agentvault: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentvault:", err)
		os.Exit(1)
	}
}

// restoresText tells agentvault restore for text (a purpose, from a
// pipeline) from restore of a backup (a data directory or a database).
func restoresText(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-"):
		case name == "data-dir" || name == "to-postgres":
			return false
		case name == "purpose":
			return true
		}
	}
	return false
}
