package service_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// What no label value may look like: a phone number (or any long run of
// digits), an email address, a WeChat openid, or an id (a ULID, a
// provider's message id): each would be patient data or a label of
// unbounded cardinality.
var (
	phoneLike  = regexp.MustCompile(`\d{6,}`)
	openIDLike = regexp.MustCompile(`^o[A-Za-z0-9_-]{20,}$`)
	idLike     = regexp.MustCompile(`[0-9A-HJKMNP-TV-Z]{26}|^(SM|CA|RE)[0-9a-f]{32}$`)
)

func TestMetricsAfterARunLintCleanAndNameNoPatient(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	rules := `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"` + nurse + `"}],"ack_timeout_seconds":60}`
	if a := e.do("PUT", "/v1/escalation-rules", keyA, rules); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	// A message delivered, one the provider refuses, a reply that
	// escalates, an opt-out, a forged webhook, a small broadcast.
	delivered := e.send(keyA, smsBody(patientPhone, secretBody, "priority", "high"))
	e.waitFor(delivered, ledger.StatusDelivered, 10*time.Second)
	e.sim.Script(twiliosim.Fail(400, 21614, "The 'To' number +14155550124 is not a mobile number"))
	failed := e.send(keyA, smsBody("+14155550124", "hi"))
	e.waitFor(failed, ledger.StatusFailed, 10*time.Second)
	e.inbound(patientPhone, "I have chest pain", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the nurse's page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	open := e.do("GET", "/v1/escalations?state=open", keyA, "")
	escs, _ := open.Body["escalations"].([]any)
	if len(escs) != 1 {
		t.Fatalf("open escalations %s", open.Raw)
	}
	if ack := e.do("POST", "/v1/escalations/"+escs[0].(map[string]any)["id"].(string)+"/ack", keyA, `{"by":"Nurse Li"}`); ack.Status != 200 {
		t.Fatalf("ack = %d %s", ack.Status, ack.Raw)
	}
	e.inbound("+14155550126", "STOP", e.sim.AuthToken())
	if code, _ := e.inbound(patientPhone, "forged", "not-the-token"); code != 403 {
		t.Fatalf("a forged webhook = %d", code)
	}
	bc := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["sms"],"body":{"en":"The clinic is closed today."},
	  "audience":[{"phone":"+14155550131","external_id":"P1"},{"phone":"+14155550132","external_id":"P2"}]}`)
	if bc.Status != 201 && bc.Status != 202 {
		t.Fatalf("POST /v1/broadcasts = %d %s", bc.Status, bc.Raw)
	}
	waitUntil(t, 10*time.Second, "the broadcast's messages", func() bool {
		return e.sim.MessagesTo("+14155550131") == 1 && e.sim.MessagesTo("+14155550132") == 1
	})

	// The ops listener serves what the registry gathers. The simulator
	// has the broadcast's messages a moment before the workers have its
	// answer and count the people sent: scrape until they are counted.
	var scrape []byte
	waitUntil(t, 10*time.Second, "the broadcast's people counted as sent", func() bool {
		res, err := http.Get("http://" + e.svc.OpsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		scrape, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("GET /metrics = %d", res.StatusCode)
		}
		return strings.Contains(string(scrape), `gateway_broadcast_people_total{state="sent"} 2`)
	})
	for _, want := range []string{
		`gateway_messages_accepted_total{channel="sms",priority="high"} 1`,
		`gateway_send_attempts_total{channel="sms",class="accepted"}`,
		`gateway_send_attempts_total{channel="sms",class="failed"} 1`,
		`gateway_provider_errors_total{channel="sms",code="21614"} 1`,
		`gateway_message_status_changes_total{status="delivered"}`,
		`gateway_delivery_latency_seconds_count{channel="sms"}`,
		`gateway_provider_request_duration_seconds_count{channel="sms"}`,
		`gateway_inbound_total{channel="sms",kind="reply"} 1`,
		`gateway_inbound_total{channel="sms",kind="opt_out"} 1`,
		`gateway_inbound_total{channel="sms",kind="status"}`,
		`gateway_webhook_requests_total{result="rejected",route="/webhooks/twilio/sms"} 1`,
		`gateway_webhook_requests_total{result="verified",route="/webhooks/twilio/status"}`,
		`gateway_consent_changes_total{address="phone",change="opt_out"}`,
		`gateway_escalations_opened_total{reason="urgent_reply"} 1`,
		`gateway_escalations_acknowledged_total 1`,
		`gateway_escalation_ack_seconds_count 1`,
		`gateway_broadcast_people_total{state="sent"} 2`,
		`gateway_queue_size{queue="gw:normal"}`,
		`gateway_sender_rate_per_second{channel="sms"} 1000`,
		`gateway_sender_tokens{channel="sms"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(scrape), want) {
			t.Errorf("the scrape has no %s", want)
		}
	}

	reg := e.svc.Metrics.Registry()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]map[string]bool{} // metric/label → values
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if phoneLike.MatchString(v) || strings.Contains(v, "@") || openIDLike.MatchString(v) || idLike.MatchString(v) || len(v) > 40 {
					t.Errorf("%s{%s=%q}: a label value that is patient data or an id", mf.GetName(), l.GetName(), v)
				}
				k := mf.GetName() + "/" + l.GetName()
				if values[k] == nil {
					values[k] = map[string]bool{}
				}
				values[k][v] = true
			}
		}
	}
	for k, vs := range values {
		if len(vs) > 20 {
			t.Errorf("%s has %d values after a short run: unbounded?", k, len(vs))
		}
	}
}
