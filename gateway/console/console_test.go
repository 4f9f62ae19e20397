package console_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/internal/users"
)

const (
	keyA     = "clinic-a-key-0123456789"
	keyB     = "clinic-b-key-0123456789"
	password = "a long enough password"
)

// gw is a gateway (API, workers, console) on a throwaway Redis with the
// Twilio simulator, on loopback.
type gw struct {
	t    *testing.T
	base string
	svc  *service.Service
	sim  *twiliosim.Server
	http *http.Client
}

func startGateway(t *testing.T, mutate ...func(*config.Config)) *gw {
	t.Helper()
	rs := redistest.Start(t)
	sim := twiliosim.New(twiliosim.Options{Voice: true})
	t.Cleanup(sim.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{t: t, base: "http://" + ln.Addr().String(), sim: sim,
		http: &http.Client{Timeout: 10 * time.Second, Transport: channeltest.LoopbackOnly(nil),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	cfg := config.NewDefaultConfig()
	cfg.PublicURL = g.base
	cfg.RedisURL = rs.URL
	cfg.APIKeys = map[string]string{keyA: "clinic-a", keyB: "clinic-b"}
	cfg.Twilio = config.TwilioConfig{AccountSID: sim.AccountSID(), AuthToken: sim.AuthToken(), From: "+15005550006", APIURL: sim.URL()}
	cfg.Voice.From = "+15005550006"
	cfg.BlobURL = "file://" + t.TempDir() + "?create_dir=true"
	cfg.Worker.PollInterval = 20 * time.Millisecond
	cfg.Worker.DelayedPollInterval = 100 * time.Millisecond
	cfg.Senders.SMSPerSecond = 1000
	cfg.Quiet.Window = "off"
	cfg.Admission.TenantRate = config.RateLimit{PerSecond: 100_000, Burst: 100_000}
	cfg.MinAckTimeout = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.OpsAddr = "" // tests run side by side: no fixed port
	for _, m := range mutate {
		m(&cfg)
	}
	svc, err := service.New(cfg, config.RoleAll, service.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listener: ln,
		Transport: channeltest.LoopbackOnly(nil), WebhookGuard: channeltest.LoopbackOnly})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	g.svc = svc
	return g
}

// account is a signed-in console user: its session cookie and CSRF token.
type account struct {
	g      *gw
	cookie string
	csrf   string
}

func (g *gw) addUser(tenant, email string, role users.Role) {
	g.t.Helper()
	if _, err := g.svc.Users.Add(context.Background(), users.NewUser{Tenant: tenant, Email: email, Name: string(role) + " of " + tenant,
		Role: role, Password: password}); err != nil {
		g.t.Fatal(err)
	}
}

// signIn signs in through the sign-in form, as a browser does.
func (g *gw) signIn(email string) *account {
	g.t.Helper()
	resp, body := g.do("GET", "/console/signin", "", nil, "")
	pre := cookieOf(resp, "gw_signin")
	token := formToken(body)
	if pre == "" || token != pre {
		g.t.Fatalf("the sign-in page set cookie %q and form token %q", pre, token)
	}
	form := url.Values{"csrf": {token}, "email": {email}, "password": {password}, "next": {"/console/broadcasts"}}
	resp, body = g.do("POST", "/console/signin", "gw_signin="+pre, strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusSeeOther {
		g.t.Fatalf("sign-in of %s = %d\n%s", email, resp.StatusCode, body)
	}
	a := &account{g: g, cookie: "gw_session=" + cookieOf(resp, "gw_session")}
	_, body = a.get("/console/broadcasts")
	a.csrf = formToken(body)
	if a.csrf == "" {
		g.t.Fatalf("no CSRF token on the broadcasts page:\n%s", body)
	}
	return a
}

func (g *gw) do(method, path, cookie string, body io.Reader, contentType string) (*http.Response, string) {
	g.t.Helper()
	req, err := http.NewRequest(method, g.base+path, body)
	if err != nil {
		g.t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (a *account) get(path string) (*http.Response, string) {
	return a.g.do("GET", path, a.cookie, nil, "")
}

// post sends a form; csrf "" leaves the token out.
func (a *account) post(path, csrf string, fields ...string) (*http.Response, string) {
	form := url.Values{}
	if csrf != "" {
		form.Set("csrf", csrf)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Add(fields[i], fields[i+1])
	}
	return a.g.do("POST", path, a.cookie, strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
}

// upload posts a CSV to the console's audience upload.
func (a *account) upload(csv string) (*http.Response, string) { return a.uploadFor("", csv) }

// uploadFor posts a CSV for a broadcast of an incident ("" for none).
func (a *account) uploadFor(incident, csv string) (*http.Response, string) {
	var b strings.Builder
	w := multipart.NewWriter(&b)
	_ = w.WriteField("csrf", a.csrf)
	if incident != "" {
		_ = w.WriteField("incident_id", incident)
	}
	f, _ := w.CreateFormFile("file", "people.csv")
	_, _ = f.Write([]byte(csv))
	_ = w.Close()
	return a.g.do("POST", "/console/audiences", a.cookie, strings.NewReader(b.String()), w.FormDataContentType())
}

var tokenRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func formToken(body string) string {
	if m := tokenRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

func cookieOf(resp *http.Response, name string) string {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// api calls the v1 API with a tenant's key.
func (g *gw) api(method, path, key, body string) map[string]any {
	g.t.Helper()
	req, _ := http.NewRequest(method, g.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.http.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 300 {
		g.t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, raw)
	}
	return out
}

// broadcast creates a small broadcast with a poll through the API.
func (g *gw) broadcast(key string) string {
	g.t.Helper()
	out := g.api("POST", "/v1/broadcasts", key, `{"name":"Flood","channels":["sms"],"audience":[{"phone":"+14155550101"},{"phone":"+14155550102"}],
		"body":{"en":"Flood: reply 1 if safe, 2 if you need help"},"poll":{"options":{"1":"safe","2":"need_help"}},"ack_timeout":"10m"}`)
	return out["id"].(string)
}

// inboundSMS posts a patient's text through the real, signed Twilio
// webhook.
func (g *gw) inboundSMS(from, body string) {
	g.t.Helper()
	code, err := g.sim.SendInbound(context.Background(), g.base+twilio.InboundPath, from, "+15005550006", body)
	if err != nil || code/100 != 2 {
		g.t.Fatalf("inbound SMS: %d %v", code, err)
	}
}

// eventually retries check until it is true, for up to 10 s.
// eventually waits for check, up to 30 s: the whole suite runs packages
// side by side on a small machine (the chaos and failover tests among
// them), and a send through the workers can take seconds then.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if check() {
			return
		}
	}
	t.Fatalf("%s: not within 30 s", what)
}
