package service_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// pager is a channel the gateway does not ship, made here, outside
// channels/, as docs/adding-a-channel.md describes: its facts declared once
// (channels.Declare) and a Channel value handed to the service. Nothing
// else in the gateway knows it.
type pager struct {
	mu   sync.Mutex
	sent []channels.Message
}

func (p *pager) Name() string { return "pager" }

func (p *pager) Send(_ context.Context, m channels.Message) (channels.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, m)
	return channels.Result{ProviderID: "PG-" + m.ID}, nil
}

// Sender makes the pager paced: the hospital's paging system takes two
// pages a second from the gateway, shared by every worker process.
func (p *pager) Sender() channels.Sender {
	return channels.Sender{ID: "PAGING-1", Rate: channels.Rate{PerSecond: 2}}
}

func (p *pager) bodies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.sent {
		out = append(out, m.To.Phone+" "+m.Body)
	}
	return out
}

func (p *pager) waitFor(t *testing.T, part string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, b := range p.bodies() {
			if strings.Contains(b, part) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pager never got %q; it got %q", part, p.bodies())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAChannelDeclaredOutsideTheChannelsFolderCarriesMessagesBroadcastsAndPlans(t *testing.T) {
	channels.Declare(channels.Spec{Name: "pager", Address: channels.Phone, MaxChars: 240, Unit: "pages"})
	pg := &pager{}
	e := startWith(t, redistest.Start(t), config.RoleAll, []channels.Channel{pg})

	// Its sender is paced with the others.
	if s := e.do("GET", "/v1/senders", keyA, ""); s.Status != 200 || !strings.Contains(s.Raw, `"pager:PAGING-1"`) {
		t.Fatalf("GET /v1/senders = %d %s", s.Status, s.Raw)
	}

	// A message, validated by the channel's facts: its address kind and body limit.
	if a := e.do("POST", "/v1/messages", keyA, `{"channel":"pager","to":{"email":"nurse@example.org"},"body":"x"}`); a.Status != 422 ||
		!strings.Contains(a.Raw, "to.phone") {
		t.Fatalf("a pager message to an email address = %d %s", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/messages", keyA, `{"channel":"pager","to":{"phone":"+14155550160"},"body":"`+strings.Repeat("x", 241)+`"}`); a.Status != 422 ||
		!strings.Contains(a.Raw, "the limit for pager is 240") {
		t.Fatalf("a pager message over its limit = %d %s", a.Status, a.Raw)
	}
	a := e.do("POST", "/v1/messages", keyA, `{"channel":"pager","to":{"phone":"+1 415 555 0160"},"body":"Ward 4: page from the gateway"}`)
	if a.Status != 202 {
		t.Fatalf("POST /v1/messages = %d %s", a.Status, a.Raw)
	}
	pg.waitFor(t, "+14155550160 Ward 4: page from the gateway")
	if m := e.waitFor(a.Body["id"].(string), ledger.StatusSent, 5*time.Second); m.ProviderID != "PG-"+m.ID {
		t.Fatalf("the message's provider id = %q", m.ProviderID)
	}

	// A broadcast whose cascade has the pager first: a person with a phone
	// gets it there; the preview counts the channel's unit.
	bc := `{"name":"Staff recall","channels":["pager","sms"],"body":{"en":"All staff: report to the emergency department."},
	  "ack_timeout":"1m","audience":[{"phone":"+14155550161"},{"email":"only-email@example.org"}]}`
	pv := e.do("POST", "/v1/broadcasts/preview", keyA, bc)
	if pv.Status != 200 || !strings.Contains(pv.Raw, `"pager"`) {
		t.Fatalf("preview = %d %s", pv.Status, pv.Raw)
	}
	a = e.do("POST", "/v1/broadcasts", keyA, bc)
	if a.Status != 202 {
		t.Fatalf("POST /v1/broadcasts = %d %s", a.Status, a.Raw)
	}
	pg.waitFor(t, "+14155550161 All staff: report to the emergency department.")
	e.waitRoster(a.Body["id"].(string), 10*time.Second, "the pager step", func(r map[string]any) bool {
		return count(r, "by_channel", "pager", "sent") == 1 && count(r, "people", "unreachable") == 1
	})

	// A follow-up plan step on the pager, due now.
	anchor := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	v := plan(t, e, keyA, `{"contact":{"phone":"+14155550162"},"anchor":"`+anchor+`","past_due":"send_now",
	  "steps":[{"offset":"PT1H","channel":"pager","body":"Day 0 check: call the ward if the wound bleeds."}]}`)
	if st := steps(v); len(st) != 1 || st[0]["state"] != "sent_now" {
		t.Fatalf("plan = %v", v)
	}
	pg.waitFor(t, "+14155550162 Day 0 check: call the ward if the wound bleeds.")
}
