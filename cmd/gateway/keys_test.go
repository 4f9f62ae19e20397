package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/redistest"
)

func TestTheKeysCommandCreatesListsRotatesAndRevokesKeys(t *testing.T) {
	rs := redistest.Start(t)
	t.Setenv("REDIS_URL", rs.URL)
	t.Setenv("GATEWAY_API_KEYS", "clinic-a:bootstrap-key-0123456789,clinic-b:bootstrap-key-9876543210")
	ctx := context.Background()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runKeys(ctx, args, &out, &errb)
		return code, out.String(), errb.String()
	}
	shown := regexp.MustCompile(`Key \(shown once, not stored\): (pmg_\S+)`)
	code, out, errs := run("create", "--tenant", "clinic-a", "--name", "EHR integration", "--scopes", "read,send")
	m := shown.FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "with scopes send,read") {
		t.Fatalf("create: %d %q %q", code, out, errs)
	}
	rdb := rs.Client()
	defer rdb.Close()
	store := apikeys.New(rdb, apikeys.Config{})
	k, err := store.Authenticate(ctx, m[1])
	if err != nil || k.Tenant != "clinic-a" || !k.Has(apikeys.Send) || k.Has(apikeys.Admin) {
		t.Fatalf("the key printed: %+v, %v", k, err)
	}

	code, out, errs = run("rotate", k.ID, "--grace", "2h")
	m2 := shown.FindStringSubmatch(out)
	if code != 0 || m2 == nil || !strings.Contains(out, "Rotated key "+k.ID) {
		t.Fatalf("rotate: %d %q %q", code, out, errs)
	}
	if _, err := store.Authenticate(ctx, m[1]); err != nil {
		t.Fatalf("the old key within its grace: %v", err)
	}
	made, err := store.Authenticate(ctx, m2[1])
	if err != nil || made.Replaces != k.ID {
		t.Fatalf("the new key: %+v, %v", made, err)
	}
	if code, out, errs := run("revoke", made.ID); code != 0 || !strings.Contains(out, "Revoked key "+made.ID) {
		t.Fatalf("revoke: %d %q %q", code, out, errs)
	}
	if _, err := apikeys.New(rdb, apikeys.Config{}).Authenticate(ctx, m2[1]); err == nil {
		t.Fatal("a revoked key still works")
	}
	code, out, _ = run("list", "--tenant", "clinic-a")
	if code != 0 || !regexp.MustCompile(`(?m)^`+k.ID+` +clinic-a +EHR integration +send,read +rotated `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+made.ID+` +clinic-a +EHR integration +send,read +revoked `).MatchString(out) ||
		strings.Contains(out, m[1]) {
		t.Fatalf("list:\n%s", out)
	}

	cases := []struct {
		name    string
		args    []string
		code    int
		mention string
	}{
		{"an unknown scope", []string{"create", "--tenant", "clinic-a", "--name", "x", "--scopes", "send,root"}, 2, `unknown scope "root"`},
		{"no scopes", []string{"create", "--tenant", "clinic-a", "--name", "x"}, 2, "--scopes must list"},
		{"no name", []string{"create", "--tenant", "clinic-a", "--scopes", "read"}, 2, "--name must be"},
		{"a tenant GATEWAY_API_KEYS does not declare", []string{"create", "--tenant", "clinic-z", "--name", "x", "--scopes", "read"}, 2, "not a tenant of GATEWAY_API_KEYS (clinic-a, clinic-b)"},
		{"rotating a revoked key", []string{"rotate", made.ID}, 1, "only an active key rotates"},
		{"a grace over 30 days", []string{"rotate", "--grace", "800h", k.ID}, 2, "--grace must be at most 30 days"},
		{"an unknown key", []string{"revoke", "aaaaaaaaaaaaaaaa"}, 1, "no key aaaaaaaaaaaaaaaa"},
		{"no id", []string{"revoke"}, 2, "give the key's id"},
		{"an unknown command", []string{"delete"}, 2, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := run(c.args...)
			if code != c.code || !strings.Contains(out+errs, c.mention) {
				t.Fatalf("exit %d, %q %q; want %d and %q", code, out, errs, c.code, c.mention)
			}
		})
	}

	events, _, err := audit.New(rdb, nil).Find(ctx, "clinic-a", audit.Query{})
	if err != nil || len(events) != 3 {
		t.Fatalf("audit events %+v, %v", events, err)
	}
	for i, action := range []string{apikeys.ActionCreate, apikeys.ActionRotate, apikeys.ActionRevoke} {
		if e := events[i]; e.Action != action || e.Actor != audit.ActorCLI || !strings.HasPrefix(e.Object, "apikey:") {
			t.Errorf("event %d = %+v, want %s by %s", i, e, action, audit.ActorCLI)
		}
	}
}
