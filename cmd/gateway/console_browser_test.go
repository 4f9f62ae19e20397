//go:build dev

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/internal/users"
)

// The console's browser tests drive a real headless Chromium against a
// gateway started as `go tool task dev` starts it. They save a screenshot
// of every page into CONSOLE_SCREENSHOTS (a directory), or the test's
// temporary directory, and log where.

// chromiumPath finds a Chromium (CHROMIUM overrides).
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is one signed-in person's window.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
}

func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
}

// screenshot saves the page as <n>-<name>.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.shot, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	r, err := chromedp.Run(b.ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		b.t.Fatalf("%s[%s]: %v", sel, name, err)
	}
	return r.Value
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *browser) signIn(l devLogin) {
	b.t.Helper()
	b.open("/console/signin")
	b.do("sign in as "+string(l.role),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), l.email),
		chromedp.SendKeys(chromedp.CSS("#password"), l.password),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#signout")))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#email")))
}

// TestACrisisDrillInTheConsole: a lead uploads 50 people, previews, confirms
// and sends a broadcast with a poll; patients answer 1 and 2 through the
// signed Twilio webhook; the roster follows without a reload; a staff
// member acknowledges the need-help escalation; a viewer cannot send.
// browserTest finds a Chromium (skipping, loudly, without one), starts
// dev as `go tool task dev` does, and returns it, what it printed, and
// the screenshot directory.
func browserTest(t *testing.T) (d *devGateway, chromium, shots string, out *channeltest.LogBuffer) {
	t.Helper()
	chromium = chromiumPath()
	if chromium == "" {
		t.Skip("SKIPPED: NO CHROMIUM FOUND (chromium, chromium-browser, google-chrome or $CHROMIUM): the browser tests did not run. " +
			"Install it (apt-get install chromium) to run them; .ci/run does.")
	}
	shots = os.Getenv("CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEWAY_ADDR", "127.0.0.1:0")
	t.Setenv("QUIET_HOURS", "off")
	ctx, cancel := context.WithCancel(context.Background())
	out = &channeltest.LogBuffer{}
	var logs channeltest.LogBuffer
	d, err := startDev(ctx, out, &logs)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop")
		}
		d.close()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	waitHealthy(t, d.api)
	return d, chromium, shots, out
}

// newBrowser starts a headless Chromium of the given window size, ended
// with the test.
func newBrowser(t *testing.T, chromium, base, shots string, width, height int) *browser {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(width, height),
		chromedp.UserDataDir(t.TempDir()))...)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// Start the browser on its own context: an action's deadline, on a
	// child of it, would otherwise close the browser when it ends.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	return &browser{t: t, ctx: bctx, base: base, shot: shots}
}

func TestACrisisDrillInTheConsole(t *testing.T) {
	d, chromium, shots, out := browserTest(t)
	ctx := context.Background()
	if !strings.Contains(out.String(), d.api+"/console") || !strings.Contains(out.String(), d.logins[0].password) {
		t.Fatalf("dev does not print the console and its logins:\n%s", out.String())
	}
	login := map[users.Role]devLogin{}
	for _, l := range d.logins {
		login[l.role] = l
	}
	// The need-help answers escalate: rules set through the API, as a
	// clinic would.
	apiCall(t, d, "PUT", "/v1/escalation-rules", `{"options":["need_help"],"keywords":["trapped"],"on_call":[{"channel":"sms","phone":"+14155550188"}]}`)

	b := newBrowser(t, chromium, d.api, shots, 1280, 900)

	// The lead signs in and uploads 50 people (one row bad, one repeated).
	b.signIn(login[users.RoleLead])
	b.screenshot("01-broadcasts")
	csv := filepath.Join(t.TempDir(), "riverside.csv")
	var rows strings.Builder
	rows.WriteString("phone,locale,external_id,name\n")
	for i := range 50 {
		fmt.Fprintf(&rows, "%s,en,MRN-%04d,Patient %d\n", patient(i), i, i)
	}
	rows.WriteString("12ab,en,MRN-BAD,Typo\n+14155551000,en,MRN-DUP,Twice\n")
	if err := os.WriteFile(csv, []byte(rows.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.open("/console/broadcasts/new")
	b.do("upload the CSV",
		chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{csv}),
		chromedp.Click(chromedp.CSS("#upload")),
		chromedp.WaitVisible(chromedp.CSS("#audience-summary")))
	if n := b.attr("#audience-summary", "data-count"); n != "50" {
		t.Fatalf("the audience holds %s people, want 50", n)
	}
	if errs := b.text("#row-errors"); !strings.Contains(errs, "52") || !strings.Contains(errs, "53") || !strings.Contains(errs, "duplicate") {
		t.Fatalf("the row errors do not name lines 52 and 53:\n%s", errs)
	}
	b.screenshot("02-composer-upload")

	// The message, SMS only, the default poll (1 safe, 2 need help); preview.
	b.do("compose",
		chromedp.SendKeys(chromedp.CSS("#name"), "Flood drill"),
		chromedp.SendKeys(chromedp.CSS("#body_en"), "Riverside Clinic flood drill: reply 1 if you are safe, 2 if you need help."),
		chromedp.SendKeys(chromedp.CSS("#body_zh"), "河滨诊所洪水演练：安全请回复1，需要帮助请回复2。"),
		chromedp.SetValue(chromedp.CSS("#channel_2"), ""),
		chromedp.Click(chromedp.CSS("#preview")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-statement")))
	if n := b.attr("#confirm-statement", "data-recipients"); n != "50" {
		t.Fatalf("the confirmation states %s people, want 50", n)
	}
	if s := b.text("#send"); !strings.Contains(s, "50") || !strings.Contains(s, "USD") {
		t.Fatalf("the send button does not state the people and the cost: %q", s)
	}
	if est := b.text("#estimate"); !strings.Contains(est, "SMS") {
		t.Fatalf("the preview has no SMS row:\n%s", est)
	}
	b.screenshot("03-confirm")
	b.do("send", chromedp.Click(chromedp.CSS("#send")), chromedp.WaitVisible(chromedp.CSS("#roster-state")))
	loc, _ := chromedp.Run(b.ctx, chromedp.Location())
	id := loc[strings.LastIndex(loc, "/")+1:]
	if !strings.HasPrefix(id, "bc_") {
		t.Fatalf("after sending, the page is %s", loc)
	}
	b.screenshot("04-roster-sent")

	// A mark on the page: it must survive, so the roster updates in place.
	b.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.__notReloaded = true`))
	answers := map[string]string{patient(0): "1", patient(1): "1", patient(2): "2", patient(3): "1"}
	for phone := range answers {
		waitFor(t, "the SMS to "+phone, func() bool { return d.sim.MessagesTo(phone) > 0 })
	}
	for phone, body := range answers {
		code, err := d.sim.SendInbound(ctx, d.api+twilio.InboundPath, phone, "+15005550006", body)
		if err != nil || code != http.StatusOK {
			t.Fatalf("patient %s answers %s: %d %v", phone, body, code, err)
		}
	}
	b.do("the roster counts the answers, live",
		chromedp.WaitVisible(chromedp.CSS(`#poll-safe[data-count="3"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#poll-need_help[data-count="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#need-help`)))
	if kept, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.__notReloaded === true`)); err != nil || !kept {
		t.Fatalf("the page was reloaded (%v %v): the roster must update in place", kept, err)
	}
	if list := b.text("#need-help"); !strings.Contains(list, patient(2)) || !strings.Contains(list, "MRN-0002") {
		t.Fatalf("the need-help list does not show the person to call back:\n%s", list)
	}
	b.screenshot("05-roster-answers")

	// The after-action report draws the drill's timeline (a server-drawn
	// SVG) and counts the answers.
	b.open("/console/broadcasts/" + id + "/report")
	b.do("the after-action report", chromedp.WaitVisible(chromedp.CSS("svg.chart")), chromedp.WaitVisible(chromedp.CSS("#total-safe")))
	if safe := b.text("#total-safe"); !strings.Contains(safe, "3") {
		t.Fatalf("the report counts the safe answers as %q, want 3", safe)
	}
	if lines, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg.chart polyline, svg.chart path").length`)); err != nil || lines == 0 {
		t.Fatalf("the timeline has no line (%d, %v)", lines, err)
	}
	b.screenshot("05b-after-action-report")

	// The lead opens an incident for the drill, with an update every 6
	// hours, and sees its page; the templates and follow-up plans pages.
	b.open("/console/incidents")
	b.do("open an incident",
		chromedp.SendKeys(chromedp.CSS("#name"), "Flood drill, December"),
		chromedp.Click(chromedp.CSS("#open")),
		chromedp.WaitVisible(chromedp.CSS("#next-due")))
	if h1 := b.text("h1"); h1 != "Flood drill, December" {
		t.Fatalf("the incident's page is titled %q", h1)
	}
	b.screenshot("05c-incident")
	b.open("/console/templates/crisis_safety_check")
	b.do("a template's preview", chromedp.WaitVisible(chromedp.CSS("#preview-sms")))
	b.screenshot("05d-template")
	b.open("/console/plans")
	b.do("the follow-up plans", chromedp.WaitVisible(chromedp.CSS("h1")))
	b.screenshot("05e-plans")
	b.signOut()

	// A staff member acknowledges the escalation the need-help answer opened.
	b.signIn(login[users.RoleStaff])
	b.open("/console/escalations")
	b.do("an escalation is open", chromedp.WaitVisible(chromedp.CSS("#escalations tbody tr")))
	rowID := b.attr("#escalations tbody tr", "id")
	if rows := b.text("#escalations"); !strings.Contains(rows, patient(2)) {
		t.Fatalf("the escalation does not name the patient:\n%s", rows)
	}
	b.screenshot("06-escalations")
	b.do("acknowledge", chromedp.Click(chromedp.CSS("#"+rowID+" button")), chromedp.WaitVisible(chromedp.CSS("#no-escalations")))
	esc, err := d.svc.Escalator.Get(ctx, devTenant, strings.TrimPrefix(rowID, "esc-"))
	if err != nil || esc.State != "acknowledged" || !strings.Contains(esc.AckedBy, login[users.RoleStaff].email) {
		t.Fatalf("the escalation after the click: %+v, %v; want acknowledged by the staff member", esc, err)
	}
	b.screenshot("07-escalations-acknowledged")
	b.open("/console/inbox")
	b.do("the inbox", chromedp.WaitVisible(chromedp.CSS("#inbox")))
	if inbox := b.text("#inbox"); !strings.Contains(inbox, "need help") || !strings.Contains(inbox, "flood drill") {
		t.Fatalf("the inbox does not show the answers with their meaning and question:\n%s", inbox)
	}
	b.screenshot("08-inbox")
	b.signOut()

	// A viewer sees the roster but cannot send or cancel.
	b.signIn(login[users.RoleViewer])
	b.open("/console/broadcasts/" + id)
	b.do("the viewer's roster", chromedp.WaitVisible(chromedp.CSS("#roster-state")))
	if html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("main"))); strings.Contains(html, "/cancel") {
		t.Fatal("the viewer is shown the cancel button")
	}
	b.screenshot("09-viewer-roster")
	status, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch("/console/broadcasts", {method: "POST",
		body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value, audience: "x", body_en: "x", channel_1: "sms"})}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Fatalf("a viewer's send = %d %v, want 403", status, err)
	}
	b.open("/console/broadcasts/new")
	b.do("the composer refuses a viewer", chromedp.WaitVisible(chromedp.CSS("p.error")))
	b.screenshot("10-viewer-refused")
	if sum, err := d.svc.Broadcast.Store.Recent(ctx, devTenant, 10); err != nil || len(sum) != 1 {
		t.Fatalf("broadcasts after the drill: %d %v, want the lead's one", len(sum), err)
	}
}

// patient is the phone number of the drill's i-th person.
func patient(i int) string { return fmt.Sprintf("+1415555%04d", 1000+i) }

func waitHealthy(t *testing.T, api string) {
	t.Helper()
	waitFor(t, "the gateway to answer", func() bool {
		resp, err := http.Get(api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("%s: not within a minute", what)
}

func apiCall(t *testing.T, d *devGateway, method, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(method, d.api+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
}
