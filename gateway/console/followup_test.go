package console_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// TestALeadFollowsUpWithThoseNotYetSafe: from a broadcast's roster a lead
// composes a follow-up to its people, only those not yet safe by default,
// with the earlier cascade and poll filled in; the confirmation says who,
// and the broadcast made reaches only the person who did not answer safe.
// A viewer cannot compose one, and clinic-b cannot follow up clinic-a's
// broadcast.
func TestALeadFollowsUpWithThoseNotYetSafe(t *testing.T) {
	g := consoleGateway(t)
	ctx := t.Context()
	bc := g.broadcast(keyA) // +14155550101 and +14155550102, "1 safe, 2 need help"
	roster := func(id string) broadcasts.Roster {
		sum, err := g.svc.Broadcast.Store.Get(ctx, "clinic-a", id)
		if err != nil {
			t.Fatal(err)
		}
		return sum.Roster()
	}
	eventually(t, "both people sent the alert", func() bool {
		r := roster(bc)
		return r.FanOutDone && r.ByChannel["sms"]["sent"]+r.ByChannel["sms"]["delivered"] == 2
	})
	g.inboundSMS("+14155550101", "1")
	eventually(t, "the safe answer counted", func() bool { return roster(bc).Poll["safe"] == 1 })

	lead := g.signIn("lead@clinic-a.test")
	if _, body := lead.get("/console/broadcasts/" + bc); !strings.Contains(body, `href="/console/broadcasts/new?follow_up_of=`+bc+`"`) {
		t.Fatalf("the roster has no follow-up link:\n%s", body)
	}
	resp, body := lead.get("/console/broadcasts/new?follow_up_of=" + bc)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="followup-summary"`) || !strings.Contains(body, `value="Follow-up: Flood"`) ||
		!strings.Contains(body, `id="only_not_safe" name="only_not_safe" value="1" checked`) || !strings.Contains(body, `value="need_help"`) ||
		strings.Contains(body, `id="upload"`) {
		t.Fatalf("the follow-up composer = %d:\n%s", resp.StatusCode, body)
	}
	fields := []string{"follow_up_of", bc, "only_not_safe", "1", "name", "Follow-up: Flood", "body_en", "The water is rising: reply 1 if safe, 2 if you need help",
		"channel_1", "sms", "poll_key_1", "1", "poll_meaning_1", "safe", "poll_key_2", "2", "poll_meaning_2", "need_help", "ack_timeout", "10m", "priority", "crisis"}
	resp, body = lead.post("/console/broadcasts/preview", lead.csrf, fields...)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="confirm-followup"`) || !strings.Contains(body, `data-recipients="1"`) {
		t.Fatalf("the confirmation = %d:\n%s", resp.StatusCode, body)
	}
	resp, _ = lead.post("/console/broadcasts", lead.csrf, fields...)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 303 || !strings.HasPrefix(loc, "/console/broadcasts/") {
		t.Fatalf("send = %d %s", resp.StatusCode, loc)
	}
	next := strings.TrimPrefix(loc, "/console/broadcasts/")
	eventually(t, "the follow-up fanned out", func() bool { return roster(next).FanOutDone })
	if r := roster(next); r.FannedOut != 1 {
		t.Fatalf("the follow-up reached %d people, want only the one not yet safe", r.FannedOut)
	}

	viewer := g.signIn("viewer@clinic-a.test")
	if resp, _ := viewer.get("/console/broadcasts/new?follow_up_of=" + bc); resp.StatusCode != 403 {
		t.Fatalf("a viewer's follow-up composer = %d", resp.StatusCode)
	}
	other := g.signIn("lead@clinic-b.test")
	if resp, _ := other.get("/console/broadcasts/new?" + url.Values{"follow_up_of": {bc}}.Encode()); resp.StatusCode != 404 {
		t.Fatalf("clinic-b's follow-up of clinic-a's broadcast = %d", resp.StatusCode)
	}
}

// TestALeadSendsABroadcastFromATemplate: the composer offers the
// templates; choosing one shows a field per variable instead of the texts;
// the confirmation names it, and the broadcast made uses it with the
// values given.
func TestALeadSendsABroadcastFromATemplate(t *testing.T) {
	g := consoleGateway(t)
	lead := g.signIn("lead@clinic-a.test")
	resp, _ := lead.upload("phone\n+14155550131\n+14155550132\n")
	audience := strings.TrimPrefix(resp.Header.Get("Location"), "/console/broadcasts/new?audience=")
	if resp.StatusCode != 303 || audience == "" {
		t.Fatalf("upload = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := lead.get("/console/broadcasts/new?audience=" + audience); !strings.Contains(body, `<option value="crisis_safety_check"`) ||
		!strings.Contains(body, `id="body_en"`) {
		t.Fatalf("the composer offers no template:\n%s", body)
	}
	fields := []string{"audience", audience, "name", "Storm", "template", "crisis_safety_check", "channel_1", "sms",
		"poll_key_1", "1", "poll_meaning_1", "safe", "poll_key_2", "2", "poll_meaning_2", "need_help", "ack_timeout", "10m", "priority", "crisis"}
	resp, body := lead.post("/console/broadcasts/new", lead.csrf, fields...)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="var_clinic_name"`) || !strings.Contains(body, `id="var_clinic_phone"`) ||
		strings.Contains(body, `id="body_en"`) {
		t.Fatalf("the composer with the template chosen = %d:\n%s", resp.StatusCode, body)
	}
	fields = append(fields, "var_clinic_name", "Lakeside Clinic", "var_clinic_phone", "555-0199")
	resp, body = lead.post("/console/broadcasts/preview", lead.csrf, fields...)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="confirm-template"`) || !strings.Contains(body, `name="var_clinic_name" value="Lakeside Clinic"`) {
		t.Fatalf("the confirmation = %d:\n%s", resp.StatusCode, body)
	}
	resp, _ = lead.post("/console/broadcasts", lead.csrf, fields...)
	id := strings.TrimPrefix(resp.Header.Get("Location"), "/console/broadcasts/")
	if resp.StatusCode != 303 || id == "" {
		t.Fatalf("send = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	sum, err := g.svc.Broadcast.Store.Get(t.Context(), "clinic-a", id)
	if err != nil || sum.Template != "crisis_safety_check" || sum.Vars["clinic_name"] != "Lakeside Clinic" || len(sum.Body) != 0 {
		t.Fatalf("the broadcast made: %+v, %v", sum, err)
	}
}
