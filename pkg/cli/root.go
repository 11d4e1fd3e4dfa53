// Package cli is the modelreg command line: flag parsing and output
// formatting over the library packages, nothing more.
package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Version is set at build time with -ldflags "-X .../pkg/cli.Version=...".
var Version = "dev"

// IO is where a command reads and writes; tests and main pass their own.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

type app struct {
	io         IO
	plainHTTP  bool
	caFile     string
	configPath string
	output     string
}

// Execute runs the command line args and returns the process exit code:
// 0 on success, 1 on failure, 2 on a usage error.
func Execute(ctx context.Context, args []string, stdio IO) int {
	// MODELREG_CPUPROFILE=FILE writes a CPU profile of this command, for
	// finding where a transfer spends its time (docs/transfer.md).
	if path := os.Getenv("MODELREG_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	a := &app{io: stdio}
	root := a.root()
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stdio.Err, "modelreg: interrupted; nothing was left half-written")
		return 130
	}
	if errors.Is(err, remote.ErrPlainHTTP) {
		err = fmt.Errorf("%w; pass --plain-http", err)
	}
	if errors.Is(err, remote.ErrSpeaksHTTPS) {
		err = fmt.Errorf("%w; drop --plain-http (and pass --ca-file FILE when a private authority signed its certificate)", err)
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.Is(err, remote.ErrUnknownAuthority) || errors.As(err, &unknownCA) {
		err = fmt.Errorf("%w; pass --ca-file FILE (or set MODELREG_CA_FILE) naming that authority's certificate (PEM)", err)
	}
	fmt.Fprintf(stdio.Err, "modelreg: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, client.ErrUsage) {
		return 2
	}
	return 1
}

type usageError struct{ error }

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "modelreg",
		Short: "A model registry on plain OCI registries",
		Long: `modelreg stores machine-learning models as OCI artifacts (CNCF ModelPack) in
any OCI 1.1 registry: a version is an immutable tag, its metadata (metrics,
params, labels, framework, datasets) lives in manifest annotations, and
oras, crane or cosign can read everything it writes.

References have the form REGISTRY/REPOSITORY[:TAG|@DIGEST], for example
localhost:5000/team/fraud-detector:1.4.0. Credentials come from the
docker/oras credential store (modelreg login, oras login or docker login),
or from MODELREG_USERNAME and MODELREG_PASSWORD. A registry whose certificate
a private authority signed is trusted with --ca-file (or MODELREG_CA_FILE).`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%v (see `%s --help`)", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.BoolVar(&a.plainHTTP, "plain-http", false, "use HTTP instead of HTTPS (automatic for localhost and 127.0.0.1 unless the registry there answers TLS)")
	pf.StringVar(&a.caFile, "ca-file", "", "PEM file of certificate authorities trusted beside the system's, for registries with a private CA (default: $MODELREG_CA_FILE)")
	pf.StringVar(&a.configPath, "registry-config", "", "credential file (default: the docker config, $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	root.AddCommand(a.pushCmd(), a.pullCmd(), a.inspectCmd(), a.listCmd(), a.searchCmd(), a.keygenCmd(), a.signCmd(), a.verifyCmd(), a.promoteCmd(), a.rollbackCmd(), a.historyCmd(), a.lineageCmd(), a.evalCmd(), a.auditCmd(), a.loginCmd(), a.logoutCmd(), a.serveCmd(), a.imageCmd(), a.copyCmd(), a.deleteCmd(), a.gcCmd(), a.robotCmd(), a.keysCmd(), a.indexCmd())
	return root
}

// remoteOptions builds connection options from the global flags.
func (a *app) remoteOptions(c *cobra.Command) remote.Options {
	o := remote.Options{
		ConfigPath: a.configPath,
		Username:   os.Getenv("MODELREG_USERNAME"),
		Password:   os.Getenv("MODELREG_PASSWORD"),
		UserAgent:  "modelreg/" + Version,
		CAFile:     a.caFile,
	}
	if o.CAFile == "" {
		o.CAFile = os.Getenv("MODELREG_CA_FILE")
	}
	if c.Flags().Changed("plain-http") {
		o.PlainHTTP = &a.plainHTTP
	}
	return o
}

// client is the library client, configured by the global flags; quiet
// turns progress off (for --output json).
func (a *app) client(c *cobra.Command, quiet bool) *client.Client {
	o := client.DefaultOptions()
	o.Remote = a.remoteOptions(c)
	o.Progress = a.reporter(quiet)
	return client.New(o)
}

// addOutputFlag adds --output to c.
func (a *app) addOutputFlag(c *cobra.Command) {
	c.Flags().StringVar(&a.output, "output", "text", "output format: text or json")
}

// outputJSON reports whether --output json was asked, refusing other values.
func (a *app) outputJSON() (bool, error) {
	switch a.output {
	case "text", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usageError{fmt.Errorf("--output %q: expected text or json", a.output)}
}

func (a *app) json(v any) error {
	enc := json.NewEncoder(a.io.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// reporter shows bars on a terminal, lines elsewhere, nothing for --output json.
func (a *app) reporter(quiet bool) progress.Reporter {
	if quiet {
		return progress.Discard()
	}
	tty := false
	if f, ok := a.io.Err.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return progress.New(a.io.Err, tty)
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}
