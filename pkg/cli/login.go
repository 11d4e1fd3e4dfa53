package cli

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) loginCmd() *cobra.Command {
	var username, password string
	var passwordStdin bool
	c := &cobra.Command{
		Use:   "login REGISTRY",
		Short: "Check and store credentials for a registry",
		Long: `Check a username and password against REGISTRY and store them in the
docker/oras credential store, where modelreg, oras and docker all find them.
Prefer --password-stdin: a password on the command line lands in shell history.`,
		Example: `  echo "$TOKEN" | modelreg login localhost:5000 -u ci --password-stdin`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if username == "" {
				return usageError{fmt.Errorf("--username is required")}
			}
			if passwordStdin {
				line, err := bufio.NewReader(a.io.In).ReadString('\n')
				if err != nil && line == "" {
					return usageError{fmt.Errorf("--password-stdin: no password on standard input")}
				}
				password = strings.TrimRight(line, "\r\n")
			}
			if password == "" {
				return usageError{fmt.Errorf("a password is required: pass --password-stdin and write it to standard input")}
			}
			if err := a.remoteOptions(c).Login(c.Context(), args[0], username, password); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "Login succeeded: credentials for %s stored\n", args[0])
			return nil
		},
	}
	c.Flags().StringVarP(&username, "username", "u", "", "user name")
	c.Flags().StringVarP(&password, "password", "p", "", "password (prefer --password-stdin)")
	c.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return c
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Remove stored credentials for a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := a.remoteOptions(c).Logout(c.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "Removed credentials for %s\n", args[0])
			return nil
		},
	}
}
