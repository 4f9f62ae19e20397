package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/users"
)

func TestTheUsersCommandAddsListsAndRemovesAccounts(t *testing.T) {
	rs := redistest.Start(t)
	t.Setenv("REDIS_URL", rs.URL)
	ctx := context.Background()
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runUsers(ctx, args, strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("a long enough password\n", "add", "--tenant", "clinic-a", "--email", "dana@example-clinic.org", "--role", "lead", "--name", "Dana Lee")
	if code != 0 || !strings.Contains(out, "Added lead dana@example-clinic.org") || strings.Contains(out, "Password") {
		t.Fatalf("add with a piped password: %d %q %q", code, out, errs)
	}
	code, out, errs = run("", "add", "--tenant", "clinic-a", "--email", "sam@example-clinic.org", "--role", "viewer", "--locale", "zh-Hans")
	m := regexp.MustCompile(`Password \(shown once, not stored\): (\S+)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("add without a password: %d %q %q", code, out, errs)
	}
	rdb := rs.Client()
	defer rdb.Close()
	store := users.New(rdb, users.Config{})
	for email, password := range map[string]string{"dana@example-clinic.org": "a long enough password", "sam@example-clinic.org": m[1]} {
		if _, _, _, err := store.SignIn(ctx, email, password); err != nil {
			t.Fatalf("%s cannot sign in with the password given: %v", email, err)
		}
	}
	cases := []struct {
		name    string
		stdin   string
		args    []string
		code    int
		mention string
	}{
		{"an address in use", "another long password", []string{"add", "--tenant", "clinic-b", "--email", "DANA@example-clinic.org", "--role", "staff"}, 1, "already"},
		{"an unknown role", "", []string{"add", "--tenant", "clinic-a", "--email", "x@example-clinic.org", "--role", "admin"}, 2, "--role must be lead, staff or viewer"},
		{"a short password", "short\n", []string{"add", "--tenant", "clinic-a", "--email", "x@example-clinic.org", "--role", "staff"}, 2, "the password must be at least 12"},
		{"no tenant", "", []string{"list"}, 2, "--tenant"},
		{"an unknown command", "", []string{"promote"}, 2, "unknown command"},
		{"removing an account of another tenant", "", []string{"remove", "--tenant", "clinic-b", "--email", "dana@example-clinic.org"}, 1, "no account"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := run(c.stdin, c.args...)
			if code != c.code || !strings.Contains(out+errs, c.mention) {
				t.Fatalf("exit %d, %q %q; want %d and %q", code, out, errs, c.code, c.mention)
			}
		})
	}
	code, out, _ = run("", "list", "--tenant", "clinic-a")
	if code != 0 || !regexp.MustCompile(`(?m)^dana@example-clinic.org +Dana Lee +lead +en `).MatchString(out) || !strings.Contains(out, "sam@example-clinic.org") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, _, errs := run("", "remove", "--tenant", "clinic-a", "--email", "dana@example-clinic.org"); code != 0 {
		t.Fatalf("remove: %d %s", code, errs)
	}
	if _, out, _ := run("", "list", "--tenant", "clinic-a"); strings.Contains(out, "dana@") {
		t.Fatalf("after remove, list shows:\n%s", out)
	}
}
