// Command gateway runs the patient messaging gateway.
//
//	gateway serve    the HTTP API only
//	gateway worker   the delivery workers only
//	gateway all      both in one process
//	gateway dev      both, on an embedded Redis with built-in provider simulators
//	gateway users    add, list and remove the console's accounts
//	gateway keys     create, list, rotate and revoke API keys
//	gateway audit    make the audit signing key; verify the exported log
//
// Configuration comes from environment variables (see docs/configuration.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	_ "time/tzdata" // contacts' time zones work on hosts without a zoneinfo database

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service"
)

const usage = `gateway — multi-channel messaging gateway for patient follow-up and crisis broadcast

Usage:
  gateway <command> [--help]

Commands:
  serve    run the HTTP API (accepts messages, serves provider webhooks)
  worker   run the delivery workers (send through the providers, retry)
  all      run the API and the workers in one process
  dev      run everything on an embedded Redis with built-in Twilio and WeChat
           simulators and an SMTP server; prints an API key and a curl
           example per channel. Not for production: only in a build with
           the dev tag (go tool task dev).
  users    add, list and remove the web console's accounts
           (gateway users --help)
  keys     create, list, rotate and revoke the API keys, with their
           scopes (gateway keys --help)
  audit    make the audit log's signing key, and verify the exported log
           against its signed checkpoints (gateway audit --help)

Configuration is read from the environment; every variable is described in
docs/configuration.md. An invalid setting stops a command with exit status 2.
Variables, with their defaults:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		printSettings(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest := args[0], args[1:]
	if cmd == "audit" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return runAudit(ctx, rest, stdout, stderr)
	}
	if cmd == "keys" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return runKeys(ctx, rest, stdout, stderr)
	}
	if cmd == "users" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return runUsers(ctx, rest, os.Stdin, stdout, stderr)
	}
	roles := map[string]config.Role{"serve": config.RoleAPI, "worker": config.RoleWorker, "all": config.RoleAll}
	help := map[string]string{
		"serve":  "gateway serve: run the HTTP API only. Needs GATEWAY_PUBLIC_URL, GATEWAY_API_KEYS, REDIS_URL and the channel settings (Twilio), which verify webhooks.",
		"worker": "gateway worker: run the delivery workers only. Needs GATEWAY_PUBLIC_URL (callback URLs), REDIS_URL and the channel settings.",
		"all":    "gateway all: run the API and the workers in one process.",
		"dev":    "gateway dev: run the whole gateway on an embedded Redis (miniredis) with built-in Twilio and WeChat simulators and an SMTP server, so the real clients run end to end without credentials. The Redis, Twilio, voice, WeChat, email, blob store, API-key and public-URL settings are replaced (docs/configuration.md, \"What dev replaces\"); the others (GATEWAY_ADDR, default :8080, LOG_LEVEL, LOG_FORMAT, worker settings…) apply.",
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stdout, help[cmd]) }
	if _, known := help[cmd]; !known {
		fmt.Fprintf(stderr, "gateway: unknown command %q (try --help)\n", cmd)
		return 2
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if cmd == "dev" {
		if err := runDev(ctx, stdout, stderr); err != nil {
			if code := configProblem(stderr, cmd, err); code != 0 {
				return code
			}
			fmt.Fprintln(stderr, "gateway dev:", err)
			return 1
		}
		return 0
	}
	cfg, err := config.Load(nil)
	if err == nil {
		err = cfg.Validate(roles[cmd])
	}
	if code := configProblem(stderr, cmd, err); code != 0 {
		return code
	}
	log := newLogger(cfg, stderr)
	redis.SetLogger(redisLogger{log.With("comp", "redis")})
	svc, err := service.New(cfg, roles[cmd], service.Options{Logger: log})
	if code := configProblem(stderr, cmd, err); code != 0 {
		return code
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := svc.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}

// configProblem prints a configuration that is not valid, naming every bad
// setting, and returns exit status 2; 0 when err is not one.
func configProblem(stderr io.Writer, cmd string, err error) int {
	var bad *config.Error
	if !errors.As(err, &bad) {
		return 0
	}
	fmt.Fprintf(stderr, "gateway %s: configuration is not valid:\n  %s\n", cmd, strings.ReplaceAll(bad.Error(), "\n", "\n  "))
	return 2
}

// openRedis loads the configuration and connects to its Redis, for the
// commands that manage what is kept there (users, keys); a code other
// than 0 is the exit status, once what is wrong is printed.
func openRedis(cmd string, stderr io.Writer) (config.Config, redis.UniversalClient, int) {
	cfg, err := config.Load(nil)
	if code := configProblem(stderr, cmd, err); code != 0 {
		return cfg, nil, code
	}
	rdb, err := service.NewRedis(cfg)
	if code := configProblem(stderr, cmd, err); code != 0 {
		return cfg, nil, code
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway %s: %v\n", cmd, err)
		return cfg, nil, 2
	}
	return cfg, rdb, 0
}

// printSettings lists every setting by group, with its default.
func printSettings(w io.Writer) {
	all := config.Settings()
	width := 0
	for _, s := range all {
		width = max(width, len(s.Name))
	}
	group := ""
	for _, s := range all {
		if s.Group != group {
			group = s.Group
			fmt.Fprintf(w, "\n%s\n", group)
		}
		if d := defaultText(s); d != "" {
			fmt.Fprintf(w, "  %-*s  %s\n", width, s.Name, d)
		} else {
			fmt.Fprintf(w, "  %s\n", s.Name)
		}
	}
}

// defaultText is a setting's default as --help shows it.
func defaultText(s config.Setting) string {
	switch {
	case s.Required == config.RoleAll:
		return "required"
	case s.Required != 0:
		return "required for serve and all"
	case s.DefaultDoc != "":
		return strings.ReplaceAll(s.DefaultDoc, "`", "")
	}
	return s.Default
}

// redisLogger routes go-redis' own messages (reconnects, Sentinel
// failovers; addresses only) into the structured log.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Warn(fmt.Sprintf(format, v...))
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
