package console_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/users"
)

func TestTheAfterActionReportShowsTheTimelineTheTimeToHalfAndWhoWasNeverReached(t *testing.T) {
	g := consoleGateway(t)
	if _, err := g.svc.Users.Add(context.Background(), users.NewUser{Tenant: "clinic-a", Email: "zh@clinic-a.test",
		Role: users.RoleViewer, Password: password, Locale: "zh-Hans"}); err != nil {
		t.Fatal(err)
	}
	out := g.api("POST", "/v1/broadcasts", keyA, `{"name":"Flood <script>alert(1)</script>","channels":["sms"],
		"audience":[{"phone":"+14155550101"},{"phone":"+14155550102"},{"email":"no-phone@example.org","external_id":"e-3"}],
		"body":{"en":"Flood: reply 1 if safe, 2 if you need help"},"poll":{"options":{"1":"safe","2":"need_help"}},"ack_timeout":"10m"}`)
	id := out["id"].(string)
	eventually(t, "both phones get the broadcast", func() bool {
		return g.sim.MessagesTo("+14155550101") > 0 && g.sim.MessagesTo("+14155550102") > 0
	})
	g.inboundSMS("+14155550101", "1")
	g.inboundSMS("+14155550102", "2")
	eventually(t, "both answers are counted", func() bool {
		sum, err := g.svc.Broadcast.Store.Get(context.Background(), "clinic-a", id)
		return err == nil && sum.Counters["st:acknowledged"] == 2
	})

	viewer := g.signIn("viewer@clinic-a.test")
	if _, roster := viewer.get("/console/broadcasts/" + id); !strings.Contains(roster, `href="/console/broadcasts/`+id+`/report"`) {
		t.Error("the roster does not link to the after-action report")
	}
	resp, body := viewer.get("/console/broadcasts/" + id + "/report")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("report = %d\n%s", resp.StatusCode, body)
	}
	for what, re := range map[string]string{
		"time to 50 % (2 of 3 acknowledged)": `id="to-half"><th scope="row">[^<]+</th><td class="num">\d+:\d\d:\d\d</td>`,
		"time to 90 % not reached":           `id="to-ninety"><th scope="row">[^<]+</th><td class="num">not reached</td>`,
		"the person without a phone":         `id="reason-no_address" data-count="1"`,
		"nobody failed":                      `id="reason-failed" data-count="0"`,
		"two of three reached":               `id="total-reached"><th scope="row">Reached</th><td class="num">2</td>`,
		"the chart":                          `<svg xmlns="http://www.w3.org/2000/svg" class="chart"`,
		"a line of people reached":           `<path class="line series-reached"`,
		"a line of people safe":              `<path class="line series-safe"`,
		"a line of reached by SMS":           `<path class="line series-channel series-channel-sms"`,
		"the chart's data table":             `<table id="timeline-data">`,
		"the unreached person, masked":       `<td>e-3</td><td>n•+@example.org</td>`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("the report lacks %s (%s)", what, re)
		}
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "no-phone@") || strings.Contains(body, "+14155550101") {
		t.Error("the report shows a name unescaped or an address in clear")
	}
	if strings.Contains(body, "‹missing:") {
		t.Error("the report lacks an English string")
	}
	if strings.Contains(body, "style=") {
		t.Error("the report carries a style attribute the Content-Security-Policy forbids")
	}
	// In Chinese too.
	if _, zh := g.signIn("zh@clinic-a.test").get("/console/broadcasts/" + id + "/report"); !strings.Contains(zh, "事后报告") ||
		strings.Contains(zh, "‹missing:") {
		t.Error("the Chinese report is not complete")
	}

	// Another tenant's lead finds nothing.
	other := g.signIn("lead@clinic-b.test")
	if resp, body := other.get("/console/broadcasts/" + id + "/report"); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "Flood") {
		t.Errorf("another tenant's report = %d, want 404", resp.StatusCode)
	}
}
