package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/invalid"
)

const keysUsage = `gateway keys: manage the API keys (docs/operations.md, "API keys"). Needs REDIS_URL.

  gateway keys create --tenant T --name N --scopes send,read[,broadcast,admin]
      Prints the key once: hand it to its user; only its hash is kept.
  gateway keys list [--tenant T]
  gateway keys rotate ID [--grace 24h]
      Prints a new key with the same name and scopes; the old one keeps
      working for the grace (at most 720h), then is refused.
  gateway keys revoke ID
      Every API process refuses the key within 5 seconds.

Scopes: send (messages, plans, questionnaire responses, contacts and
consent, escalation acknowledgements), read (reading), broadcast (crisis
broadcasts, audiences, incidents), admin (settings, webhook, escalation
rules, templates and questionnaire definitions, keys, audit log, erasures).
The keys of GATEWAY_API_KEYS are bootstrap keys with every scope: replace
them with keys made here. Every change is an audit event of the tenant.
`

// runKeys runs "gateway keys …".
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, keysUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, keysUsage) }
	var tenant, name, scopes *string
	var grace *time.Duration
	id := ""
	switch sub {
	case "create":
		tenant = fs.String("tenant", "", "the tenant (as in GATEWAY_API_KEYS)")
		name = fs.String("name", "", "what uses the key, e.g. \"EHR integration\"")
		scopes = fs.String("scopes", "", "comma-separated: send, read, broadcast, admin")
	case "list":
		tenant = fs.String("tenant", "", "only this tenant's keys")
	case "rotate", "revoke":
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			id, rest = rest[0], rest[1:]
		}
		if sub == "rotate" {
			grace = fs.Duration("grace", apikeys.DefaultGrace, "how long the old key keeps working")
		}
	default:
		fmt.Fprintf(stderr, "gateway keys: unknown command %q (create, list, rotate or revoke)\n", sub)
		return 2
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if id == "" && (sub == "rotate" || sub == "revoke") && fs.NArg() > 0 {
		id = fs.Arg(0) // after the flags
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gateway keys %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	if (sub == "rotate" || sub == "revoke") && id == "" {
		fmt.Fprintf(stderr, "gateway keys %s: give the key's id (gateway keys list shows them)\n", sub)
		return 2
	}
	var want []apikeys.Scope
	if sub == "create" {
		var err error
		if want, err = apikeys.ParseScopes(*scopes); err != nil {
			fmt.Fprintf(stderr, "gateway keys create: --scopes: %v\n", err)
			return 2
		}
	}
	cfg, rdb, code := openRedis("keys", stderr)
	if code != 0 {
		return code
	}
	defer rdb.Close()
	if sub == "create" {
		if code := checkTenant(cfg, *tenant, stderr); code != 0 {
			return code
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store := apikeys.New(rdb, apikeys.Config{Audit: audit.New(rdb, nil)})
	by := apikeys.By{Actor: audit.ActorCLI}
	switch sub {
	case "create":
		k, plain, err := store.Create(ctx, apikeys.NewKey{Tenant: *tenant, Name: *name, Scopes: want}, by)
		var bad *invalid.Error
		if errors.As(err, &bad) {
			for _, fe := range bad.Errors {
				fmt.Fprintf(stderr, "gateway keys create: --%s %s\n", fe.Field, fe.Detail)
			}
			return 2
		}
		if err != nil {
			fmt.Fprintln(stderr, "gateway keys create:", err)
			return 1
		}
		fmt.Fprintf(stdout, "Created key %s (%s) of tenant %s with scopes %s.\n", k.ID, k.Name, k.Tenant, scopeList(k.Scopes))
		fmt.Fprintf(stdout, "Key (shown once, not stored): %s\n", plain)
		return 0
	case "list":
		list, err := store.List(ctx, *tenant)
		if err != nil {
			fmt.Fprintln(stderr, "gateway keys list:", err)
			return 1
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tTENANT\tNAME\tSCOPES\tSTATE\tCREATED\tLAST USED\tVALID UNTIL")
		for _, k := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Tenant, k.Name, scopeList(k.Scopes), k.State,
				k.CreatedAt.Format(time.RFC3339), timeOrDash(k.LastUsedAt), timeOrDash(k.ValidUntil))
		}
		_ = w.Flush()
		return 0
	}
	k, err := store.Find(ctx, id)
	if err == nil && sub == "rotate" {
		var made apikeys.Key
		var plain string
		made, plain, k, err = store.Rotate(ctx, k.Tenant, id, *grace, by)
		if err == nil {
			fmt.Fprintf(stdout, "Rotated key %s of tenant %s to %s; %s keeps working until %s.\n", id, made.Tenant, made.ID, id,
				k.ValidUntil.Format(time.RFC3339))
			fmt.Fprintf(stdout, "Key (shown once, not stored): %s\n", plain)
		}
	} else if err == nil {
		if k, err = store.Revoke(ctx, k.Tenant, id, by); err == nil {
			fmt.Fprintf(stdout, "Revoked key %s (%s) of tenant %s; every API process refuses it within %s.\n", k.ID, k.Name, k.Tenant,
				store.Config().CacheTTL)
		}
	}
	var bad *invalid.Error
	switch {
	case errors.Is(err, apikeys.ErrNotFound):
		fmt.Fprintf(stderr, "gateway keys %s: no key %s\n", sub, id)
		return 1
	case errors.Is(err, apikeys.ErrNotActive):
		fmt.Fprintf(stderr, "gateway keys rotate: key %s was rotated or revoked already: only an active key rotates\n", id)
		return 1
	case errors.As(err, &bad):
		fmt.Fprintf(stderr, "gateway keys rotate: --grace %s\n", bad.Errors[0].Detail)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "gateway keys %s: %v\n", sub, err)
		return 1
	}
	return 0
}

// checkTenant refuses a key for a tenant GATEWAY_API_KEYS does not
// declare: the gateway's tenants are those (a STOP is applied in each).
func checkTenant(cfg config.Config, tenant string, stderr io.Writer) int {
	if len(cfg.APIKeys) == 0 {
		fmt.Fprintf(stderr, "gateway keys create: GATEWAY_API_KEYS is not set here, so tenant %q is not checked: it must be one of its tenants\n", tenant)
		return 0
	}
	tenants := slices.Sorted(maps.Values(cfg.APIKeys))
	if !slices.Contains(tenants, tenant) {
		fmt.Fprintf(stderr, "gateway keys create: --tenant %q is not a tenant of GATEWAY_API_KEYS (%s)\n", tenant, strings.Join(slices.Compact(tenants), ", "))
		return 2
	}
	return 0
}

func scopeList(scopes []apikeys.Scope) string {
	parts := make([]string, len(scopes))
	for i, sc := range scopes {
		parts[i] = string(sc)
	}
	return strings.Join(parts, ",")
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
