package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/spf13/cobra"
)

func (a *app) robotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "robot",
		Short: "Create, list and revoke robot accounts (CI credentials) on modelreg serve",
		Long: `Robot accounts are credentials for machines: a CI job that pushes models, a
deploy pipeline that pulls them. Each has its own rights (repository
patterns and actions), an optional expiry, and a secret shown once when it is
created (the server keeps only its hash). It logs in as robot$NAME with any
client: modelreg login, oras login, docker login, crane auth login.

Robot accounts need modelreg serve with an access policy (serve --access,
docs/access.md), and creating, listing or revoking one needs admin on each
of its repository patterns. Revocation is immediate: the server checks the
account on every request, tokens included.`,
	}
	c.AddCommand(a.robotCreateCmd(), a.robotListCmd(), a.robotRevokeCmd())
	return c
}

func (a *app) robotCreateCmd() *cobra.Command {
	var o client.RobotOptions
	var actions string
	c := &cobra.Command{
		Use:   "create REGISTRY NAME --repo PATTERN --actions LIST",
		Short: "Create a robot account and print its secret (once)",
		Long: `Create robot account NAME on REGISTRY with the actions (pull, push, sign,
delete, promote:STAGE, admin; comma-separated) on the repository patterns
(--repo, repeatable: team/* is one path segment, team/** any depth). The
secret goes to standard output, alone on its line, so a script can capture
it; it cannot be shown again. Store it in your CI's secret store.`,
		Example: `  modelreg robot create localhost:5000 ci-train --repo 'team/*' --actions pull,push,sign --expires 2160h
  SECRET=$(modelreg robot create registry.example.com deploy --repo 'team/**' --actions pull)
  echo "$SECRET" | oras login registry.example.com -u 'robot$deploy' --password-stdin`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			for _, s := range strings.Split(actions, ",") {
				if s = strings.TrimSpace(s); s != "" {
					o.Actions = append(o.Actions, s)
				}
			}
			rb, err := a.client(c, jsonOut).CreateRobot(c.Context(), args[0], args[1], o)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(rb)
			}
			exp := "never expires"
			if !rb.Expires.IsZero() {
				exp = "expires " + rb.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(a.io.Err, "created robot %s (log in as %s): %s on %s; %s.\nIts secret is below: store it now, it cannot be shown again.\n",
				rb.Name, rb.Username, strings.Join(rb.Actions, ","), strings.Join(rb.Repositories, ", "), exp)
			fmt.Fprintln(a.io.Out, rb.Secret)
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&o.Repositories, "repo", nil, "repository pattern the robot may act on (repeatable; team/* one segment, team/** any depth)")
	f.StringVar(&actions, "actions", "", "comma-separated: pull, push, sign, delete, promote:STAGE, admin")
	f.StringVar(&o.Description, "description", "", "what the robot is for (shown by robot list)")
	f.DurationVar(&o.Expires, "expires", 0, "life from now, e.g. 2160h (90 days); default never")
	a.addOutputFlag(c)
	return c
}

func (a *app) robotListCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "list REGISTRY",
		Short:   "List the robot accounts you administer",
		Example: `  modelreg robot list localhost:5000 --output json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			rbs, err := a.client(c, jsonOut).Robots(c.Context(), args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(rbs)
			}
			tw := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tACTIONS\tREPOSITORIES\tEXPIRES\tLAST USED\tCREATED BY")
			for _, r := range rbs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.State, strings.Join(r.Actions, ","), strings.Join(r.Repositories, " "),
					timeOrDash(r.Expires), timeOrDash(r.LastUsed), r.CreatedBy)
			}
			return tw.Flush()
		},
	}
	a.addOutputFlag(c)
	return c
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func (a *app) robotRevokeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "revoke REGISTRY NAME",
		Short:   "Revoke a robot account: its secret and tokens stop working at once",
		Example: `  modelreg robot revoke localhost:5000 ci-train`,
		Args:    cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			rb, err := a.client(c, jsonOut).RevokeRobot(c.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(rb)
			}
			fmt.Fprintf(a.io.Out, "revoked robot %s at %s\n", rb.Name, rb.Revoked.Format(time.RFC3339))
			return nil
		},
	}
	a.addOutputFlag(c)
	return c
}
