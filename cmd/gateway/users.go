package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/users"
)

const usersUsage = `gateway users: manage the console's accounts (docs/console.md). Needs REDIS_URL.

  gateway users add --tenant T --email E --role lead|staff|viewer [--name N] [--locale en|zh-Hans]
      The password is read from standard input (its first line), e.g.
        gateway users add … < password.txt
      When standard input is a terminal or empty, a password is generated
      and printed once: hand it to its owner.
  gateway users list --tenant T
  gateway users remove --tenant T --email E

Roles: lead (compose, send and cancel broadcasts, and all staff do), staff
(inbox, acknowledge escalations), viewer (read only). An address signs in
to one account only, in one tenant.
`

// runUsers runs "gateway users …"; stdin gives add its password.
func runUsers(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usersUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("users "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, usersUsage) }
	tenant := fs.String("tenant", "", "the tenant (as in GATEWAY_API_KEYS)")
	email := fs.String("email", "", "the account's email address: its login")
	var role, name, locale *string
	switch sub {
	case "add":
		role = fs.String("role", "", "lead, staff or viewer")
		name = fs.String("name", "", "the person's name, as the console shows it")
		locale = fs.String("locale", "en", "the console's language for them: en or zh-Hans")
	case "list", "remove":
	default:
		fmt.Fprintf(stderr, "gateway users: unknown command %q (add, list or remove)\n", sub)
		return 2
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gateway users %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	if *tenant == "" || (sub != "list" && *email == "") {
		fmt.Fprintf(stderr, "gateway users %s: --tenant%s is required\n", sub, map[bool]string{true: " and --email are", false: ""}[sub != "list"])
		return 2
	}
	_, rdb, code := openRedis("users", stderr)
	if code != 0 {
		return code
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store := users.New(rdb, users.Config{})
	switch sub {
	case "add":
		return addUser(ctx, store, users.NewUser{Tenant: *tenant, Email: *email, Name: *name, Role: users.Role(*role), Locale: *locale},
			stdin, stdout, stderr)
	case "list":
		list, err := store.List(ctx, *tenant)
		if err != nil {
			fmt.Fprintln(stderr, "gateway users list:", err)
			return 1
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "EMAIL\tNAME\tROLE\tLOCALE\tCREATED")
		for _, u := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.Email, u.Name, u.Role, u.Locale, u.CreatedAt.Format(time.RFC3339))
		}
		_ = w.Flush()
		return 0
	default: // remove
		err := store.Remove(ctx, *tenant, *email)
		if errors.Is(err, users.ErrNotFound) {
			fmt.Fprintf(stderr, "gateway users remove: tenant %s has no account %s\n", *tenant, *email)
			return 1
		}
		if err != nil {
			fmt.Fprintln(stderr, "gateway users remove:", err)
			return 1
		}
		fmt.Fprintf(stdout, "Removed %s from tenant %s; their sessions have ended.\n", *email, *tenant)
		return 0
	}
}

// addUser creates an account with the password read from stdin, or a
// generated one printed once.
func addUser(ctx context.Context, store *users.Store, n users.NewUser, stdin io.Reader, stdout, stderr io.Writer) int {
	password, err := readPassword(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "gateway users add: reading the password from standard input:", err)
		return 1
	}
	generated := password == ""
	if generated {
		if password, err = users.GeneratePassword(); err != nil {
			fmt.Fprintln(stderr, "gateway users add:", err)
			return 1
		}
	}
	n.Password = password
	u, err := store.Add(ctx, n)
	var bad *invalid.Error
	switch {
	case errors.As(err, &bad):
		for _, fe := range bad.Errors {
			fmt.Fprintf(stderr, "gateway users add: %s %s\n", flagOf(fe.Field), fe.Detail)
		}
		return 2
	case errors.Is(err, users.ErrExists):
		fmt.Fprintf(stderr, "gateway users add: an account signs in with %s already (in this or another tenant); remove it first\n", n.Email)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "gateway users add:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Added %s %s to tenant %s.\n", u.Role, u.Email, u.Tenant)
	if generated {
		fmt.Fprintf(stdout, "Password (shown once, not stored): %s\n", password)
	}
	return 0
}

func flagOf(field string) string {
	if field == "password" {
		return "the password"
	}
	return "--" + field
}

// readPassword reads the first line of stdin; "" when stdin is a terminal
// (nothing is piped in) or empty.
func readPassword(stdin io.Reader) (string, error) {
	if f, ok := stdin.(*os.File); ok {
		st, err := f.Stat()
		if err != nil || st.Mode()&os.ModeCharDevice != 0 {
			return "", nil
		}
	}
	b, err := io.ReadAll(io.LimitReader(stdin, users.MaxPasswordLen+2))
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}
