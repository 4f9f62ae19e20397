package console_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
)

const (
	samPhone = "+14155550131"
	evil     = `<script>alert("x")</script><img src=x onerror=alert(1)>`
)

var samIdentity = consent.Identity{Kind: consent.Phone, Value: samPhone}

// conversationGateway is a console gateway where clinic-a's contact mrn-7
// was asked a question by SMS and answered it with markup.
func conversationGateway(t *testing.T) *gw {
	g := consoleGateway(t)
	g.api("PUT", "/v1/contacts/mrn-7", keyA, `{"phone":"`+samPhone+`"}`)
	g.api("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"`+samPhone+`"},"body":"How are you?",
		"expect_reply":{"options":{"1":"better","2":"worse"}}}`)
	eventually(t, "the question is sent", func() bool { return g.sim.MessagesTo(samPhone) > 0 })
	g.inboundSMS(samPhone, evil)
	eventually(t, "the reply is filed", func() bool { return conversationLength(t, g) == 2 })
	return g
}

// conversationLength counts the messages and replies of mrn-7's phone.
func conversationLength(t *testing.T, g *gw) int {
	t.Helper()
	entries, err := g.svc.Replies.Conversation(t.Context(), "clinic-a", samIdentity, 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

var answerKeyRE = regexp.MustCompile(`name="key" value="([^"]+)"`)

// answerKey is the idempotency key of the answer form on a page.
func answerKey(t *testing.T, body string) string {
	t.Helper()
	m := answerKeyRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the page has no answer form:\n%s", body)
	}
	return m[1]
}

const conversation = "/console/contacts/mrn-7/conversation"

func TestTheInboxLinksEachReplyToTheConversationWhichShowsItAsText(t *testing.T) {
	g := conversationGateway(t)
	viewer := g.signIn("viewer@clinic-a.test")
	_, body := viewer.get("/console/inbox")
	if !strings.Contains(body, `href="`+conversation+`"`) {
		t.Fatalf("the inbox does not link the reply to its conversation:\n%s", body)
	}
	resp, body := viewer.get(conversation)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the conversation = %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"How are you?", "&lt;script&gt;", "to the patient", "from the patient", "SMS", esc("+1••••••••31")} {
		if !strings.Contains(body, want) {
			t.Errorf("the conversation lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
		t.Fatalf("the reply is rendered as markup:\n%s", body)
	}
	if strings.Contains(body, esc(samPhone)) || strings.Contains(body, samPhone) {
		t.Error("the conversation shows the patient's number in clear")
	}
	if strings.Contains(body, `id="answer"`) {
		t.Error("the page shows a viewer the answer form")
	}
	if strings.Contains(body, "‹missing:") {
		t.Error("the page has a string missing from its catalogue")
	}
}

func TestStaffAnswerThePatientThroughTheNormalSendPathOnceForTwoSubmits(t *testing.T) {
	g := conversationGateway(t)
	staff := g.signIn("staff@clinic-a.test")
	_, body := staff.get(conversation)
	key := answerKey(t, body)
	if !strings.Contains(body, `<option value="sms"`) {
		t.Fatalf("the form does not offer the channel the patient used:\n%s", body)
	}
	answer := "We will call you today."
	resp, _ := staff.post(conversation, staff.csrf, "key", key, "channel", "sms", "body", answer)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the answer = %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	again, _ := staff.post(conversation, staff.csrf, "key", key, "channel", "sms", "body", answer)
	if again.StatusCode != http.StatusSeeOther || again.Header.Get("Location") != loc {
		t.Fatalf("the second submit = %d to %q, want 303 to %q", again.StatusCode, again.Header.Get("Location"), loc)
	}
	u, err := url.Parse(loc)
	if err != nil || u.Path != conversation || u.Query().Get("sent") == "" {
		t.Fatalf("the answer redirects to %q", loc)
	}
	m, err := g.svc.Ledger.Get(t.Context(), "clinic-a", u.Query().Get("sent"))
	if err != nil {
		t.Fatalf("the answer is not in the ledger: %v", err)
	}
	if m.Body != answer || m.Channel != "sms" || m.To.Phone != samPhone || m.Priority != "normal" {
		t.Errorf("the ledger has %q on %s to %s at %s", m.Body, m.Channel, m.To.Phone, m.Priority)
	}
	eventually(t, "the answer reaches the patient", func() bool { return g.sim.MessagesTo(samPhone) == 2 })
	if n := conversationLength(t, g); n != 3 {
		t.Errorf("the conversation has %d lines, want 3: two submits made two messages", n)
	}
	resp, body = staff.get(loc)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="sent"`) || !strings.Contains(body, answer) {
		t.Errorf("the page after the answer = %d, without the notice or the answer:\n%s", resp.StatusCode, body)
	}
	// The same form with another text is not a second message either.
	resp, body = staff.post(conversation, staff.csrf, "key", key, "channel", "sms", "body", "Another text")
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "already sent") {
		t.Errorf("the form sent again with another text = %d", resp.StatusCode)
	}
	time.Sleep(300 * time.Millisecond)
	if n := g.sim.MessagesTo(samPhone); n != 2 {
		t.Errorf("the patient got %d messages, want 2", n)
	}
}

func TestAnAnswerToAPatientWhoSaidStopIsRefusedAndNothingQueued(t *testing.T) {
	g := conversationGateway(t)
	g.inboundSMS(samPhone, "STOP")
	eventually(t, "the opt-out is recorded", func() bool {
		out, err := g.svc.Consent.OptedOut(t.Context(), "clinic-a", samIdentity)
		return err == nil && out
	})
	staff := g.signIn("staff@clinic-a.test")
	_, body := staff.get(conversation)
	key := answerKey(t, body)
	resp, body := staff.post(conversation, staff.csrf, "key", key, "channel", "sms", "body", "Are you there?")
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, `id="refused"`) || !strings.Contains(body, "opted out") {
		t.Fatalf("an answer to an opted-out patient = %d\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(body, "Are you there?") || answerKey(t, body) != key {
		t.Error("the refused form does not keep the text and its key")
	}
	if n := conversationLength(t, g); n != 2 {
		t.Errorf("the conversation has %d lines, want 2: a message was queued", n)
	}
}

func TestAnswersAreRefusedToViewersFormsWithoutTheirTokenAndBadForms(t *testing.T) {
	g := conversationGateway(t)
	viewer := g.signIn("viewer@clinic-a.test")
	staff := g.signIn("staff@clinic-a.test")
	_, body := staff.get(conversation)
	key := answerKey(t, body)
	if resp, body := viewer.post(conversation, viewer.csrf, "key", key, "channel", "sms", "body", "Hello"); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(body, "Your role does not allow this") {
		t.Errorf("a viewer's answer = %d, want 403", resp.StatusCode)
	}
	for _, token := range []string{"", viewer.csrf} {
		if resp, _ := staff.post(conversation, token, "key", key, "channel", "sms", "body", "Hello"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("an answer with CSRF token %q = %d, want 403", token, resp.StatusCode)
		}
	}
	for _, c := range []struct{ name, key, channel, body, want string }{
		{"an empty message", key, "sms", "  ", "Write the message"},
		{"a channel the patient did not use", key, "email", "Hello", "Choose a channel the patient replied on"},
		{"a form without its key", "", "sms", "Hello", "This form had expired"},
		{"a message too long", key, "sms", strings.Repeat("a", 1601), "longer than 1600"},
	} {
		resp, body := staff.post(conversation, staff.csrf, "key", c.key, "channel", c.channel, "body", c.body)
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, c.want) {
			t.Errorf("%s = %d, want 422 saying %q", c.name, resp.StatusCode, c.want)
		}
	}
	if n := conversationLength(t, g); n != 2 {
		t.Errorf("the conversation has %d lines, want 2: a refused answer was queued", n)
	}
}

func TestAnotherTenantsConversationIsNotFound(t *testing.T) {
	g := conversationGateway(t)
	staff := g.signIn("staff@clinic-a.test")
	_, body := staff.get(conversation)
	key := answerKey(t, body)
	theirs := g.signIn("lead@clinic-b.test")
	if resp, body := theirs.get(conversation); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "How are you?") {
		t.Errorf("another tenant's conversation = %d, want 404", resp.StatusCode)
	}
	if resp, _ := theirs.post(conversation, theirs.csrf, "key", key, "channel", "sms", "body", "Hello"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an answer in another tenant's conversation = %d, want 404", resp.StatusCode)
	}
	if n := conversationLength(t, g); n != 2 {
		t.Errorf("the conversation has %d lines, want 2", n)
	}
}
