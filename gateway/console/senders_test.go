package console_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestTheSendersPageShowsTheSMSSenderAndTheQueues(t *testing.T) {
	g := consoleGateway(t)
	g.api("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"+14155550123"},"body":"Your appointment is tomorrow"}`)
	viewer := g.signIn("viewer@clinic-a.test")
	resp, body := viewer.get("/console/senders")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("senders = %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{`id="sender-sms"`, esc("sms:+15005550006"), `<td class="num">1000</td>`, `id="queues"`, "gw:normal"} {
		if !strings.Contains(body, want) {
			t.Errorf("the senders page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, esc("+14155550123")) || strings.Contains(body, "appointment") || strings.Contains(body, "‹missing:") {
		t.Error("the senders page shows a recipient, a message or a missing string")
	}
}
