package console

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/users"
)

// signInApp is a console on a bare app: only sign-in and its cookies.
func signInApp(t *testing.T, secure bool, now func() time.Time) (*fiber.App, *Console) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	t.Cleanup(func() { rdb.Close() })
	store := users.New(rdb, users.Config{Now: now, Params: users.Params{Memory: 64, Time: 1, Threads: 1}})
	if _, err := store.Add(context.Background(), users.NewUser{Tenant: "clinic-a", Email: "dana@example-clinic.org", Role: users.RoleStaff,
		Password: "a long enough password"}); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Users: store, Secure: secure, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{ErrorHandler: c.HandleError})
	c.Mount(app)
	return app, c
}

func send(t *testing.T, app *fiber.App, method, path, cookie, form string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(form))
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := app.Test(req, 5000)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// signIn signs in and returns the Set-Cookie header of the session.
func signIn(t *testing.T, app *fiber.App, c *Console) (setCookie string, cookie string) {
	t.Helper()
	page := send(t, app, "GET", "/console/signin", "", "")
	var pre *http.Cookie
	for _, ck := range page.Cookies() {
		if ck.Name == c.signinCookie() {
			pre = ck
		}
	}
	if pre == nil {
		t.Fatalf("no sign-in cookie: %v", page.Header)
	}
	form := url.Values{"csrf": {pre.Value}, "email": {"dana@example-clinic.org"}, "password": {"a long enough password"}}
	resp := send(t, app, "POST", "/console/signin", pre.Name+"="+pre.Value, form.Encode())
	if resp.StatusCode != http.StatusSeeOther {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("sign-in = %d\n%s", resp.StatusCode, b)
	}
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, c.sessionCookie()+"=") {
			return h, strings.SplitN(h, ";", 2)[0]
		}
	}
	t.Fatalf("no session cookie among %v", resp.Header.Values("Set-Cookie"))
	return "", ""
}

func TestTheSessionCookieIsHttpOnlySameSiteStrictAndSecure(t *testing.T) {
	cases := []struct {
		name   string
		secure bool
		prefix string
	}{
		{"over HTTPS: Secure, and bound to this host by __Host-", true, "__Host-gw_session="},
		{"plain HTTP on loopback (dev): not Secure, or the browser would drop it", false, "gw_session="},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			app, c := signInApp(t, cs.secure, time.Now)
			set, _ := signIn(t, app, c)
			low := strings.ToLower(set)
			if !strings.HasPrefix(set, cs.prefix) || !strings.Contains(low, "httponly") || !strings.Contains(low, "samesite=strict") ||
				!strings.Contains(low, "path=/") || strings.Contains(low, "secure") != cs.secure || strings.Contains(low, "domain=") {
				t.Fatalf("Set-Cookie: %s", set)
			}
		})
	}
}

func TestSignOutEndsTheSessionAndAnExpiredSessionAsksToSignInAgain(t *testing.T) {
	var now = time.Now()
	clock := func() time.Time { return now }
	app, c := signInApp(t, true, clock)
	_, cookie := signIn(t, app, c)
	// Routes beyond sign-in need the domain; the session check comes first.
	resp := send(t, app, "POST", "/console/signout", cookie, "csrf=wrong")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without the CSRF token = %d", resp.StatusCode)
	}
	now = now.Add(31 * time.Minute)
	resp = send(t, app, "GET", "/console/inbox", cookie, "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/signin?next=") {
		t.Fatalf("an idle session = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestSignInWithAWrongPasswordIsRefusedAndAfterFiveLocked(t *testing.T) {
	app, c := signInApp(t, false, time.Now)
	page := send(t, app, "GET", "/console/signin", "", "")
	pre := page.Cookies()[0]
	for i := range 5 {
		form := url.Values{"csrf": {pre.Value}, "email": {"dana@example-clinic.org"}, "password": {"wrong password"}}
		resp := send(t, app, "POST", "/console/signin", pre.Name+"="+pre.Value, form.Encode())
		b, _ := io.ReadAll(resp.Body)
		want, text := http.StatusUnauthorized, "is wrong"
		if i == 4 {
			want, text = http.StatusTooManyRequests, "Too many failed sign-ins"
		}
		if resp.StatusCode != want || !strings.Contains(string(b), text) {
			t.Fatalf("try %d = %d\n%s", i+1, resp.StatusCode, b)
		}
	}
	_ = c
}

func TestTheCataloguesHaveEveryStringInBothLanguages(t *testing.T) {
	cats, err := loadCatalogues()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	key := regexp.MustCompile(`\{\{-? *(?:t|tf) "([a-z_.]+)"`)
	entries, _ := fs.ReadDir(files, "templates")
	for _, e := range entries {
		b, _ := fs.ReadFile(files, "templates/"+e.Name())
		for _, m := range key.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	// Keys made up from values: roles, states, statuses, channels.
	for _, r := range users.Roles {
		used["role."+string(r)] = true
	}
	for _, st := range broadcasts.PersonStates {
		used["state."+st] = true
	}
	for _, st := range []string{"queued", "scheduled", "sending", "sent", "delivered", "undelivered", "failed", "canceled", "suppressed"} {
		used["status."+st] = true
	}
	for _, ch := range []string{"sms", "voice", "wechat", "email"} {
		used["channel."+ch] = true
	}
	for _, k := range []string{"bstate.active", "bstate.canceled", "priority.crisis", "priority.high", "meaning.no_answer_yet",
		"meaning.unreachable", "error.not_found", "error.forbidden", "error.csrf", "error.too_large", "error.unavailable",
		"signin.wrong", "signin.locked", "roster.canceled", "roster.canceled_before", "compose.upload_missing", "compose.upload_empty",
		"messages.bad_to", "messages.bad_channel", "messages.bad_status", "messages.bad_date", "messages.bad_window",
		"conversation.stale", "conversation.body_missing", "conversation.body_long", "conversation.bad_channel", "conversation.opted_out",
		"conversation.invalid", "conversation.already_sent", "conversation.backlog_full"} {
		used[k] = true
	}
	for loc, cat := range cats {
		for k := range used {
			if cat[k] == "" {
				t.Errorf("%s: no text for %q", loc, k)
			}
		}
		for k := range cats["en"] {
			if _, ok := cat[k]; !ok {
				t.Errorf("%s lacks %q, which English has", loc, k)
			}
		}
		for k, v := range cat {
			if strings.Count(v, "%") != strings.Count(cats["en"][k], "%") {
				t.Errorf("%s: %q has other placeholders than in English: %q", loc, k, v)
			}
		}
	}
	raw, _ := fs.ReadFile(files, "i18n/en.json")
	if !json.Valid(raw) {
		t.Fatal("en.json is not JSON")
	}
}

func TestBrowserLocaleAndSafeNext(t *testing.T) {
	for header, want := range map[string]string{"zh-CN,zh;q=0.9": "zh-Hans", "en-US": "en", "fr-FR,zh-TW;q=0.5": "zh-Hans", "": "en"} {
		if got := browserLocale(header); got != want {
			t.Errorf("browserLocale(%q) = %q, want %q", header, got, want)
		}
	}
	for next, want := range map[string]string{"/console/inbox": "/console/inbox", "https://evil.example/": "/console/broadcasts",
		"//evil.example/console/": "/console/broadcasts", "/console/signin": "/console/broadcasts", "/v1/messages": "/console/broadcasts"} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestTheSignInPageSpeaksTheBrowsersLanguage(t *testing.T) {
	app, _ := signInApp(t, false, time.Now)
	for lang, want := range map[string]string{"zh-CN,zh;q=0.9": `<html lang="zh-Hans">`, "en-GB": `<html lang="en">`} {
		req := httptest.NewRequest("GET", "/console/signin", nil)
		req.Header.Set("Accept-Language", lang)
		resp, err := app.Test(req, 5000)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), want) || strings.Contains(string(b), missing) {
			t.Errorf("Accept-Language %s: the page is not in its language:\n%s", lang, b)
		}
	}
}
