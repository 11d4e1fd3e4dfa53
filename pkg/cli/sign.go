package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// password reads COSIGN_PASSWORD, as cosign does; on a terminal it asks.
func (a *app) password(confirm bool) ([]byte, error) {
	if p, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(p), nil
	}
	f, ok := a.io.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, usageError{errors.New("set COSIGN_PASSWORD to the key's password (empty for none)")}
	}
	fmt.Fprint(a.io.Err, "Password for the key: ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.io.Err)
	if err != nil || !confirm {
		return p, err
	}
	fmt.Fprint(a.io.Err, "Again: ")
	again, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.io.Err)
	if err != nil {
		return nil, err
	}
	if string(again) != string(p) {
		return nil, errors.New("the passwords differ")
	}
	return p, nil
}

func (a *app) keygenCmd() *cobra.Command {
	var prefix string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Make a cosign key pair (PREFIX.key and PREFIX.pub)",
		Long: `Make an ECDSA P-256 key pair in cosign's format: PREFIX.key is encrypted with
COSIGN_PASSWORD (asked for on a terminal when unset), PREFIX.pub is the public
key to list in a trust policy. The cosign CLI uses the same files
(cosign sign --key PREFIX.key, cosign verify --key PREFIX.pub). Existing files
are never overwritten.`,
		Example: `  COSIGN_PASSWORD=... modelreg keygen --output-key-prefix alice`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			priv, pub := prefix+".key", prefix+".pub"
			for _, p := range []string{priv, pub} {
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s already exists; move it away or pick another --output-key-prefix", p)
				}
			}
			pw, err := a.password(true)
			if err != nil {
				return err
			}
			privPEM, pubPEM, err := key.Generate(pw)
			if err != nil {
				return err
			}
			if err := writeNew(priv, privPEM, 0o600); err != nil {
				return err
			}
			if err := writeNew(pub, pubPEM, 0o644); err != nil {
				os.Remove(priv)
				return err
			}
			k, err := key.ParsePublic(pubPEM)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "Private key written to %s, public key to %s\n", priv, pub)
			fmt.Fprintln(a.io.Out, k.Fingerprint)
			return nil
		},
	}
	c.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "file name prefix of the key pair")
	return c
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func (a *app) signCmd() *cobra.Command {
	var keyPath, format string
	var noImage bool
	c := &cobra.Command{
		Use:   "sign REF --key cosign.key",
		Short: "Sign a version's digest with a cosign key",
		Long: `Sign the manifest digest of the version REF with a cosign private key
(password from COSIGN_PASSWORD) and store the signature in the registry:
by default as a sigstore bundle referrer (cosign v3's format, checked by
` + "`cosign verify --key KEY.pub --insecure-ignore-tlog`" + ` with cosign v3), or with
--format legacy as the sha256-<hex>.sig tag cosign v2 reads. No transparency
log is used: the key pair is the trust. A tag REF is resolved first; the
signature covers the digest, so moving tags cannot transfer it.

When the version has an image view (always on modelreg serve; on other
registries once written), its digest is signed too, in the same form, so a
deploy pipeline can run cosign verify on exactly what it deploys
(REGISTRY/REPO/image@sha256:... on modelreg serve). modelreg serve's gate
and modelreg verify count a signature on the view it derives from a version
as approval of that version. --no-image signs the version only.`,
		Example: `  COSIGN_PASSWORD=... modelreg sign localhost:5000/team/fraud:1.4.0 --key alice.key`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if keyPath == "" {
				return usageError{errors.New("--key is required: a cosign private key, e.g. --key cosign.key")}
			}
			form := signature.Form(format)
			if form != signature.FormBundle && form != signature.FormLegacy {
				return usageError{fmt.Errorf("--format %q: expected bundle or legacy", format)}
			}
			if _, err := remote.ParseReference(args[0]); err != nil {
				return usageError{err} // before asking for a password
			}
			pw, err := a.password(false)
			if err != nil {
				return err
			}
			priv, err := key.LoadPrivate(keyPath, pw)
			if err != nil {
				return err
			}
			sign := a.client(c, true).Sign
			if noImage {
				sign = a.client(c, true).SignVersionOnly
			}
			s, err := sign(c.Context(), args[0], priv, form)
			if err != nil && (s == nil || s.Signature == "") {
				return err
			}
			if err != nil { // the version is signed; its image view is not
				fmt.Fprintf(a.io.Err, "signed %s@%s with key %s (%s signature %s)\n", args[0], s.Digest, s.Key, s.Format, shortDigest(s.Signature))
				return err
			}
			if jsonOut {
				return a.json(s)
			}
			fmt.Fprintf(a.io.Err, "signed %s@%s with key %s (%s signature %s)\n", args[0], s.Digest, s.Key, s.Format, shortDigest(s.Signature))
			if s.Image != "" {
				fmt.Fprintf(a.io.Err, "signed its image view %s too (signature %s)\n", s.Image, shortDigest(s.ImageSignature))
			}
			return nil
		},
	}
	c.Flags().StringVar(&keyPath, "key", "", "cosign private key file (required)")
	c.Flags().StringVar(&format, "format", "bundle", "signature format: bundle (cosign v3) or legacy (cosign v2 .sig tag)")
	c.Flags().BoolVar(&noImage, "no-image", false, "sign the version only, not its image view (by default both are signed, so `cosign verify` of the view passes)")
	a.addOutputFlag(c)
	return c
}

func (a *app) verifyCmd() *cobra.Command {
	var stage, policyPath string
	var allowUnprotected bool
	c := &cobra.Command{
		Use:   "verify REF [--stage STAGE]",
		Short: "List a version's signatures and check the trust policy",
		Long: `Find every signature of the version REF in the three forms cosign writes
(legacy .sig tag, OCI 1.1 referrer, sigstore bundle), check each against the
keys of the trust policy, and show which key each matched. With --stage,
evaluate that stage's rule; without it, every stage the policy names.
Signatures by a key the policy revokes are shown as REVOKED and never count,
and a stage holding the version whose promotion rested on a revoked key is
flagged (docs/policy.md, "Revoking a key"). Exits
0 only when the policy is satisfied (with --stage) or at least one valid
signature by a policy key was found (without). A --stage the policy does not
protect is an error (a misspelt stage would otherwise pass as "not
protected") unless --allow-unprotected is given.

The policy comes from --policy, else .modelreg/policy.yaml; see docs/policy.md.`,
		Example: `  modelreg verify localhost:5000/team/fraud:1.4.0 --stage production --policy policy.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			pol, err := requiredPolicy(policyPath)
			if err != nil {
				return err
			}
			if _, ok := pol.Stage(stage); stage != "" && !ok && !allowUnprotected {
				return usageError{unprotectedStage(pol, stage)}
			}
			vd, err := a.client(c, true).Verify(c.Context(), args[0], pol, stage)
			if err != nil {
				return err
			}
			if jsonOut {
				if err := a.json(vd); err != nil {
					return err
				}
			} else {
				a.printVerdict(vd)
			}
			ok, decisions := vd.OK, vd.Decisions
			if !ok {
				if stage != "" {
					return decisions[0].Err()
				}
				return errors.New("no valid signature by a key of the policy")
			}
			return nil
		},
	}
	c.Flags().StringVar(&stage, "stage", "", "evaluate this stage's rule; it must be a stage the policy protects")
	c.Flags().BoolVar(&allowUnprotected, "allow-unprotected", false, "accept a --stage the policy does not protect (it is then reported as not protected, exit 0)")
	c.Flags().StringVar(&policyPath, "policy", "", "trust policy file (default "+policy.DefaultPath+")")
	a.addOutputFlag(c)
	return c
}

// unprotectedStage explains a --stage the policy does not protect: most
// often a typo, which must not pass for "not protected, nothing to check".
// printVerdict shows each signature with the policy key it matched, then
// each stage's decision.
func (a *app) printVerdict(vd *client.Verdict) {
	names := map[string]string{}
	for n, k := range vd.Policy.Keys {
		names[k.Fingerprint] = n
	}
	fmt.Fprintf(a.io.Out, "%s@%s\n\n", vd.Repository, vd.Digest)
	w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FORM\tKEY\tVALID\tSOURCE / PROBLEM")
	for _, f := range vd.Signatures {
		k := "-"
		if f.Key != "" {
			k = names[f.Key] + " " + shortDigest(f.Key)
		} else if f.Claimed != "" {
			k = "? " + shortDigest(f.Claimed)
		}
		detail := f.Source
		if f.Problem != "" {
			detail += ": " + f.Problem
		}
		valid := fmt.Sprint(f.Valid)
		if rk, ok := vd.Policy.RevokedAt(f.Key, vd.At); ok && f.Valid {
			valid = "REVOKED"
			detail += ": " + rk.Explain()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.Form, k, valid, detail)
	}
	w.Flush()
	if len(vd.Signatures) == 0 {
		fmt.Fprintln(a.io.Out, "(no signatures)")
	}
	if vd.SignatureNote != "" {
		fmt.Fprintln(a.io.Out, vd.SignatureNote)
	}
	fmt.Fprintln(a.io.Out)
	for _, d := range vd.Decisions {
		switch {
		case !d.Protected:
			fmt.Fprintf(a.io.Out, "stage %s: not protected by the policy\n", d.Stage)
		case d.Allowed:
			var who []string
			for _, ap := range d.Approvers {
				who = append(who, ap.Name)
			}
			fmt.Fprintf(a.io.Out, "stage %s: satisfied (%d of %d: %s)\n", d.Stage, len(d.Approvers), d.Required, strings.Join(who, ", "))
		default:
			fmt.Fprintf(a.io.Out, "stage %s: NOT satisfied: %s\n", d.Stage, strings.Join(d.Missing, "; "))
		}
	}
	a.printFlaggedHeads(vd.StageHeads)
}

func unprotectedStage(pol *policy.Policy, stage string) error {
	names := sortedKeys(pol.Stages)
	msg := fmt.Sprintf("--stage %q: the policy %s does not protect this stage", stage, pol.Source)
	if len(names) == 0 {
		msg += "; it protects no stage"
	} else {
		msg += "; it protects " + strings.Join(names, ", ")
	}
	if s := closest(stage, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return errors.New(msg + "; pass --allow-unprotected to check an unprotected stage anyway")
}

// closest is the name within edit distance 2 (1 for names of up to 4
// letters) of s, the nearest one, or "".
func closest(s string, names []string) string {
	best, bestD := "", 0
	for _, n := range names {
		limit := 2
		if len(n) <= 4 {
			limit = 1
		}
		if d := editDistance(s, n); d <= limit && (best == "" || d < bestD) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, with an
// adjacent transposition counting as one edit ("prodcution").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
