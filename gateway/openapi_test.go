package gateway

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/erasure"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/inbound"
	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/templates"
)

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func openAPILoad(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatalf("read openapi.yaml: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml is not valid YAML: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi.yaml: openapi = %q, want 3.1.x", v)
	}
	return doc
}

// openAPIOperations returns "METHOD /path" → operation object.
func openAPIOperations(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("openapi.yaml has no paths object")
	}
	ops := map[string]map[string]any{}
	for path, item := range paths {
		pi, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("openapi.yaml: path %s is not an object", path)
		}
		for key, op := range pi {
			if !slices.Contains(openAPIMethods, key) {
				continue // parameters, summary, …
			}
			o, ok := op.(map[string]any)
			if !ok {
				t.Fatalf("openapi.yaml: %s %s is not an object", key, path)
			}
			ops[strings.ToUpper(key)+" "+path] = o
		}
	}
	return ops
}

// openAPITestServer builds the API with only what registering its routes needs:
// New does not touch Redis or the ledger, and the webhook routes come from
// the real Twilio SMS and voice channels.
func openAPITestServer(t *testing.T) *Server {
	t.Helper()
	accountSID := "AC" + strings.Repeat("0123456789abcdef", 2)
	authToken := strings.Repeat("fedcba9876543210", 2)
	sms, err := twilio.NewSMS(twilio.Config{
		AccountSID: accountSID,
		AuthToken:  authToken,
		From:       "+15005550006",
		PublicURL:  "http://127.0.0.1:1",
	})
	if err != nil {
		t.Fatalf("twilio.NewSMS: %v", err)
	}
	voice, err := twilio.NewVoice(twilio.VoiceConfig{
		AccountSID: accountSID,
		AuthToken:  authToken,
		From:       "+15005550006",
		PublicURL:  "http://127.0.0.1:1",
	})
	if err != nil {
		t.Fatalf("twilio.NewVoice: %v", err)
	}
	// WeChat only declares its webhook with a Token; its Redis is never dialled here.
	wc, err := wechat.New(wechat.Config{AppID: "wx0123456789abcdef", AppSecret: "secret", Token: "token",
		Redis: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("wechat.New: %v", err)
	}
	// Email serves its events webhook with a secret, and the unsubscribe page.
	em, err := email.New(email.Config{URL: "smtp+insecure://127.0.0.1:1", From: "Clinic <noreply@example-clinic.test>",
		WebhookSecret: "secret", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("email.New: %v", err)
	}
	t.Cleanup(func() { _ = em.Close() })
	return New(Options{
		Channels:        channels.NewRegistry(sms, voice, wc, em),
		Consent:         consent.New(nil),
		Contacts:        contacts.New(nil),
		Replies:         replies.New(nil, time.Hour),
		Webhooks:        webhooks.NewStore(nil),
		Ledger:          ledger.New(nil, time.Hour),
		Escalator:       &escalation.Escalator{},
		Inbound:         &inbound.Receiver{},
		HelpTexts:       inbound.NewHelpTexts(nil),
		Templates:       templates.NewStore(nil, nil),
		Followups:       followups.NewStore(nil, time.Hour),
		Questionnaires:  &questionnaires.Service{},
		Audiences:       audiences.NewStore(nil, time.Hour),
		Broadcasts:      broadcasts.NewStore(nil, time.Hour),
		Incidents:       &incidents.Service{Store: incidents.NewStore(nil, time.Hour)},
		Audit:           audit.New(nil, nil),
		Erasures:        &erasure.Service{},
		Keys:            apikeys.New(nil, apikeys.Config{}),
		APIKeys:         map[string]string{"openapi-test-key-0123456789": "openapi"},
		PublicURL:       "http://127.0.0.1:1",
		MaxRequestBytes: 64 << 10,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

var openAPIFiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)[?+*]?`)

// openAPIAppRoutes lists the registered routes as "METHOD /path" in OpenAPI form.
func openAPIAppRoutes(s *Server) map[string]bool {
	routes := map[string]bool{}
	for _, r := range s.App().GetRoutes(true) { // true: leave out app.Use / group middleware
		if r.Method == http.MethodHead || len(r.Handlers) == 0 {
			continue // Fiber adds HEAD for every GET
		}
		routes[r.Method+" "+openAPIFiberParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	return routes
}

func openAPISortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestOpenAPIMatchesRoutes keeps openapi.yaml and the routes the server
// registers in step, in both directions.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := openAPILoad(t)
	ops := openAPIOperations(t, doc)
	routes := openAPIAppRoutes(openAPITestServer(t))
	if len(routes) == 0 {
		t.Fatal("the server registered no routes")
	}
	for _, r := range openAPISortedKeys(routes) {
		if _, ok := ops[r]; !ok {
			t.Errorf("route %s is served but not documented in gateway/openapi.yaml: add it under paths", r)
		}
	}
	for _, op := range openAPISortedKeys(ops) {
		if !routes[op] {
			t.Errorf("gateway/openapi.yaml documents %s, but the server has no such route: remove it or register the route", op)
		}
	}
}

// TestOpenAPIProblemResponses checks that every API operation documents at
// least one 4xx answer as application/problem+json, and that every
// documented problem answer uses the Problem schema.
func TestOpenAPIProblemResponses(t *testing.T) {
	doc := openAPILoad(t)
	ops := openAPIOperations(t, doc)
	for _, name := range openAPISortedKeys(ops) {
		op := ops[name]
		path := strings.SplitN(name, " ", 2)[1]
		exempt := path == "/healthz" || path == "/readyz" || path == "/openapi.yaml" || strings.HasPrefix(path, "/webhooks/") ||
			strings.HasPrefix(path, "/f/") || // the patient web form answers HTML pages
			strings.HasPrefix(path, "/u/") // so does the unsubscribe page
		responses, ok := op["responses"].(map[string]any)
		if !ok || len(responses) == 0 {
			t.Errorf("%s: no responses documented", name)
			continue
		}
		problem4xx := false
		for _, code := range openAPISortedKeys(responses) {
			resp := openAPIResolve(t, doc, responses[code])
			content, _ := resp["content"].(map[string]any)
			pj, isProblem := content[ProblemContentType].(map[string]any)
			if !isProblem {
				if (code[0] == '4' || code[0] == '5') && !exempt {
					t.Errorf("%s: response %s is not documented as %s", name, code, ProblemContentType)
				}
				continue
			}
			schema := openAPIRefName(pj["schema"])
			if schema != "#/components/schemas/Problem" {
				t.Errorf("%s: response %s: %s schema is %q, want the Problem schema", name, code, ProblemContentType, schema)
			}
			if code[0] == '4' {
				problem4xx = true
			}
		}
		if !problem4xx && !exempt {
			t.Errorf("%s: documents no 4xx response with %s", name, ProblemContentType)
		}
	}
	create := ops["POST /v1/messages"]
	if create == nil {
		t.Fatal("POST /v1/messages is not documented")
	}
	hasIdemKey := false
	for _, p := range openAPISlice(create["parameters"]) {
		if pm := openAPIResolve(t, doc, p); pm["name"] == "Idempotency-Key" && pm["in"] == "header" {
			hasIdemKey = true
		}
	}
	if !hasIdemKey {
		t.Error("POST /v1/messages does not document the Idempotency-Key header")
	}
	createResponses, _ := create["responses"].(map[string]any)
	replay := openAPIResolve(t, doc, createResponses["200"])
	if h, _ := replay["headers"].(map[string]any); h["Idempotent-Replayed"] == nil {
		t.Error("POST /v1/messages: the 200 (replay) response does not document the Idempotent-Replayed header")
	}
}

// TestOpenAPIRefsResolve checks that every local $ref points at something.
func TestOpenAPIRefsResolve(t *testing.T) {
	doc := openAPILoad(t)
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch n := v.(type) {
		case map[string]any:
			if ref, ok := n["$ref"].(string); ok {
				if _, err := openAPILookupRef(doc, ref); err != nil {
					t.Errorf("%s: %v", at, err)
				}
			}
			for _, k := range openAPISortedKeys(n) {
				walk(at+"/"+k, n[k])
			}
		case []any:
			for i, e := range n {
				walk(fmt.Sprintf("%s/%d", at, i), e)
			}
		}
	}
	walk("#", doc)
}

// TestOpenAPIProblemTypes checks that every problem type the code can
// answer with is listed in openapi.yaml (the API description's table).
func TestOpenAPIProblemTypes(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec := string(raw)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	slug := regexp.MustCompile(`problem\([^,()]+,\s*"([a-z0-9-]+)"`)
	found := map[string]bool{"validation": true} // validationProblem
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range slug.FindAllStringSubmatch(string(src), -1) {
			found[m[1]] = true
		}
	}
	for _, s := range openAPISortedKeys(found) {
		if !strings.Contains(spec, "`/problems/"+s+"`") {
			t.Errorf("problem type /problems/%s is used in gateway/*.go but not listed in openapi.yaml", s)
		}
	}
}

func openAPISlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func openAPIRefName(v any) string {
	m, _ := v.(map[string]any)
	ref, _ := m["$ref"].(string)
	return ref
}

// resolve follows a local $ref (one level is all the document uses).
func openAPIResolve(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	ref, ok := m["$ref"].(string)
	if !ok {
		return m
	}
	target, err := openAPILookupRef(doc, ref)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func openAPILookupRef(doc map[string]any, ref string) (map[string]any, error) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not local", ref)
	}
	var cur any = doc
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$ref %q does not point at an object", ref)
	}
	return m, nil
}

// TestOpenAPIIsServedWithoutAKey: the document is found from the running
// gateway, not only by reading the repository.
func TestOpenAPIIsServedWithoutAKey(t *testing.T) {
	s := openAPITestServer(t)
	resp, err := s.App().Test(httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	onDisk, _ := os.ReadFile("openapi.yaml")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(body, onDisk) {
		t.Fatalf("GET /openapi.yaml = %d %q, %d bytes (want the %d bytes of openapi.yaml)", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(onDisk))
	}
}
