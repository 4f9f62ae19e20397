package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/redistest"
)

// TestEveryRouteDeclaresItsScope walks every /v1 route the server
// registers: each is in routeScopes, refuses a key that has every scope
// but its own (403 insufficient-scope, naming it), and lets a key with
// only its own scope past authentication (any answer but 401 and 403
// insufficient-scope: the handlers here run without their stores).
func TestEveryRouteDeclaresItsScope(t *testing.T) {
	s := openAPITestServer(t)
	rdb := redistest.Start(t).Client()
	s.opts.Keys = apikeys.New(rdb, apikeys.Config{})
	s.opts.Audit, s.opts.Redis = nil, rdb
	ctx := context.Background()
	only, allBut := map[apikeys.Scope]string{}, map[apikeys.Scope]string{}
	for _, sc := range apikeys.Scopes {
		others := slices.DeleteFunc(slices.Clone(apikeys.Scopes), func(o apikeys.Scope) bool { return o == sc })
		for _, k := range []struct {
			into   map[apikeys.Scope]string
			scopes []apikeys.Scope
		}{{only, []apikeys.Scope{sc}}, {allBut, others}} {
			_, plain, err := s.opts.Keys.Create(ctx, apikeys.NewKey{Tenant: "openapi", Name: "scope test", Scopes: k.scopes}, apikeys.By{})
			if err != nil {
				t.Fatal(err)
			}
			k.into[sc] = plain
		}
	}
	routes := map[string]bool{}
	for _, r := range s.App().GetRoutes(true) {
		if r.Method == "HEAD" || !strings.HasPrefix(r.Path, "/v1/") {
			continue
		}
		route := r.Method + " " + r.Path
		routes[route] = true
		scope, declared := routeScopes[route]
		if !declared {
			t.Errorf("%s declares no scope: add it to routeScopes (and to docs/operations.md)", route)
			continue
		}
		path := strings.NewReplacer(":id", "x1", ":name", "n1").Replace(r.Path)
		code, body := callWith(t, s, allBut[scope], r.Method, path, "")
		if code != 403 || !strings.Contains(body, "/problems/insufficient-scope") || !strings.Contains(body, `\"`+string(scope)+`\" scope`) {
			t.Errorf("%s with a key without %q = %d %s; want 403 insufficient-scope naming it", route, scope, code, body)
		}
		code, body = callWith(t, s, only[scope], r.Method, path, "")
		if code == 401 || code == 403 && strings.Contains(body, "insufficient-scope") {
			t.Errorf("%s with a key of only %q = %d %s; want it let in", route, scope, code, body)
		}
	}
	for route := range routeScopes {
		if !routes[route] {
			t.Errorf("routeScopes declares %s, which the server does not register", route)
		}
	}
}

// TestTheOperationsGuideListsEachRoutesScope: docs/operations.md's table
// of scopes lists every route in its scope's row, and no other.
func TestTheOperationsGuideListsEachRoutesScope(t *testing.T) {
	raw, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[apikeys.Scope]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		for _, sc := range apikeys.Scopes {
			if strings.HasPrefix(line, "| `"+string(sc)+"` |") {
				rows[sc] = line
			}
		}
	}
	for route, scope := range routeScopes {
		method, path, _ := strings.Cut(route, " ")
		cell := "`" + method + " " + openAPIFiberParam.ReplaceAllString(path, "{$1}") + "`"
		for _, sc := range apikeys.Scopes {
			if listed := strings.Contains(rows[sc], cell); listed != (sc == scope) {
				t.Errorf("docs/operations.md: the %s row lists %s: %v; its scope is %s", sc, cell, listed, scope)
			}
		}
	}
}

// TestTheOpenAPIDocumentNamesEachRoutesScope: each /v1 operation's
// security requirement is bearerAuth with the scope the route needs.
func TestTheOpenAPIDocumentNamesEachRoutesScope(t *testing.T) {
	ops := openAPIOperations(t, openAPILoad(t))
	for route, scope := range routeScopes {
		method, path, _ := strings.Cut(route, " ")
		op := ops[method+" "+openAPIFiberParam.ReplaceAllString(path, "{$1}")]
		if op == nil {
			continue // TestOpenAPIMatchesRoutes says so
		}
		b, _ := json.Marshal(op["security"])
		if want := `[{"bearerAuth":["` + string(scope) + `"]}]`; string(b) != want {
			t.Errorf("%s: security is %s, want %s", route, b, want)
		}
		responses, _ := op["responses"].(map[string]any)
		if responses["403"] == nil {
			t.Errorf("%s does not document its 403 insufficient-scope", route)
		}
	}
}

func TestKeysAreManagedThroughTheAPIWithoutARestart(t *testing.T) {
	const bootstrap = "bootstrap-key-of-clinic-a-0123"
	rdb := redistest.Start(t).Client()
	var skew atomic.Int64 // the keys' clock, moved by the test
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	log := audit.New(rdb, nil)
	server := func() *Server { // one API process
		return New(Options{Redis: rdb, Audit: log, Keys: apikeys.New(rdb, apikeys.Config{Now: now, Audit: log}),
			APIKeys: map[string]string{bootstrap: "clinic-a", "bootstrap-key-of-clinic-b-0123": "clinic-b"}, MaxRequestBytes: 64 << 10,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	a, b := server(), server()
	made := func(t *testing.T, s *Server, key, method, path, body string) madeKey {
		t.Helper()
		code, out := callWith(t, s, key, method, path, body)
		var k madeKey
		if code != 201 || json.Unmarshal([]byte(out), &k) != nil || k.Secret == "" {
			t.Fatalf("%s %s = %d %s", method, path, code, out)
		}
		return k
	}
	admin := made(t, a, bootstrap, "POST", "/v1/api-keys", `{"name":"Clinic IT","scopes":["admin","read"]}`)
	sender := made(t, a, admin.Secret, "POST", "/v1/api-keys", `{"name":"EHR integration","scopes":["send"]}`)
	if code, body := callWith(t, b, sender.Secret, "GET", "/v1/api-keys", ""); code != 403 || !strings.Contains(body, `\"admin\" scope`) {
		t.Fatalf("a send key listing keys = %d %s", code, body)
	}
	code, body := callWith(t, b, admin.Secret, "GET", "/v1/api-keys", "")
	if code != 200 || !strings.Contains(body, `"name":"EHR integration"`) || strings.Contains(body, sender.Secret) || strings.Contains(body, `"key"`) {
		t.Fatalf("GET /v1/api-keys = %d %s", code, body)
	}
	for _, c := range []struct{ name, method, path, body, problem string }{
		{"no name", "POST", "/v1/api-keys", `{"scopes":["send"]}`, `"field":"name"`},
		{"an unknown scope", "POST", "/v1/api-keys", `{"name":"x","scopes":["root"]}`, `"field":"scopes"`},
		{"a grace of none", "POST", "/v1/api-keys/" + sender.ID + "/rotate", `{"grace_seconds":0}`, `"field":"grace_seconds"`},
		{"another tenant's key", "DELETE", "/v1/api-keys/" + sender.ID, "", "/problems/not-found"},
	} {
		key := admin.Secret
		if c.name == "another tenant's key" {
			key = "bootstrap-key-of-clinic-b-0123"
		}
		if code, body := callWith(t, a, key, c.method, c.path, c.body); !strings.Contains(body, c.problem) {
			t.Errorf("%s: %d %s", c.name, code, body)
		}
	}

	// Rotation: both keys work through the grace, then only the new one.
	rotated := made(t, a, admin.Secret, "POST", "/v1/api-keys/"+sender.ID+"/rotate", `{"grace_seconds":3600}`)
	if rotated.Previous == nil || rotated.Previous.ID != sender.ID || rotated.Previous.State != apikeys.Rotated || rotated.Replaces != sender.ID {
		t.Fatalf("rotated %+v", rotated)
	}
	for _, key := range []string{sender.Secret, rotated.Secret} {
		if code, body := callWith(t, b, key, "GET", "/v1/messages", ""); code != 403 || !strings.Contains(body, `\"read\" scope`) {
			t.Fatalf("a send key reading (authenticated, refused its scope) = %d %s", code, body)
		}
	}
	if code, body := callWith(t, a, admin.Secret, "POST", "/v1/api-keys/"+sender.ID+"/rotate", ""); code != 409 || !strings.Contains(body, "key-not-active") {
		t.Fatalf("rotating a rotated key = %d %s", code, body)
	}
	skew.Add(int64(time.Hour))
	if code, _ := callWith(t, b, sender.Secret, "GET", "/v1/messages", ""); code != 401 {
		t.Fatalf("the old key after its grace = %d", code)
	}

	// Revocation: refused at once by the process that revoked it, within
	// the cache's TTL by the other.
	if code, body := callWith(t, a, admin.Secret, "DELETE", "/v1/api-keys/"+rotated.ID, ""); code != 200 || !strings.Contains(body, `"state":"revoked"`) {
		t.Fatalf("revoke = %d %s", code, body)
	}
	if code, _ := callWith(t, a, rotated.Secret, "GET", "/v1/messages", ""); code != 401 {
		t.Fatalf("a revoked key, in the process that revoked it = %d", code)
	}
	skew.Add(int64(a.opts.Keys.Config().CacheTTL))
	if code, body := callWith(t, b, rotated.Secret, "GET", "/v1/messages", ""); code != 401 || !strings.Contains(body, "/problems/unauthorized") {
		t.Fatalf("a revoked key, in another process after the cache's TTL = %d %s", code, body)
	}

	// The changes are audit events of the tenant, by the key that made them.
	code, body = callWith(t, a, admin.Secret, "GET", "/v1/audit?action=apikey.create", "")
	if code != 200 || !strings.Contains(body, `"actor":"apikey:`+admin.ID+`","action":"apikey.create","object":"apikey:`+sender.ID+`"`) {
		t.Fatalf("audit = %d %s", code, body)
	}
	for _, k := range []madeKey{admin, sender, rotated} {
		if strings.Contains(body, k.Secret) {
			t.Fatalf("the audit log holds a key: %s", body)
		}
	}
}
