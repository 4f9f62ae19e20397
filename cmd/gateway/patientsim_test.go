//go:build dev

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

func TestDevPatientPhoneRepliesStopAndIsOptedOut(t *testing.T) {
	m, out, logs := startDevTest(t, regexp.MustCompile(`(?s)API\s+(http://127\.0\.0\.1:\d+).*API key\s+(\S+).*Patient phone\s+(http://127\.0\.0\.1:\d+)/dev/patients/`))
	api, key, patients := m[1], m[2], m[3]
	if !strings.Contains(out.String(), "curl -s -X POST "+patients+"/dev/patients/+14155550100/sms") {
		t.Fatalf("dev printed no patient curl example:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "Patient page    "+patients+"/dev/patients ") {
		t.Fatalf("dev printed no patient page:\n%s", out.String())
	}
	if resp, err := http.Get(patients + "/dev/patients?to=%2B14155550100"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the patient page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	const phone = "+14155550123"

	// A question to the patient, who gets it…
	id := postExample(t, api, key, `{"channel":"sms","to":{"phone":"`+phone+`"},"body":"Did you take your medicine? Reply 1 yes, 2 no.","expect_reply":{"options":{"1":"yes","2":"no"}}}`)
	if got := waitStatus(t, api, key, id, "delivered"); got != "delivered" {
		t.Fatalf("the question ended %q\n%s", got, logs.String())
	}
	got := patientMessages(t, patients, phone)
	if len(got) != 1 || !strings.Contains(got[0].Body, "medicine") || got[0].Status != "delivered" {
		t.Fatalf("the phone received %+v", got)
	}

	// …answers STOP through the dev API, signed as Twilio signs…
	var sms struct {
		Status int    `json:"gateway_status"`
		SID    string `json:"message_sid"`
		Reply  string
	}
	patientPost(t, patients+"/dev/patients/"+phone+"/sms", `{"body":"STOP"}`, &sms)
	if sms.Status != 200 || !regexp.MustCompile(`^SM[0-9a-f]{32}$`).MatchString(sms.SID) {
		t.Fatalf("the STOP answer: %+v\n%s", sms, logs.String())
	}
	t.Logf("the gateway answered STOP with %q", sms.Reply)

	// …and is not written to again.
	id = postExample(t, api, key, `{"channel":"sms","to":{"phone":"`+phone+`"},"body":"Your appointment is tomorrow."}`)
	if got := waitStatus(t, api, key, id, "suppressed"); got != "suppressed" {
		t.Fatalf("the message after STOP ended %q, want suppressed\n%s", got, logs.String())
	}
	got = patientMessages(t, patients, phone)
	if len(got) == 0 || !strings.Contains(got[len(got)-1].Body, "medicine") {
		t.Fatalf("the phone's messages, newest first: %+v", got)
	}
	for _, g := range got {
		if strings.Contains(g.Body, "appointment") {
			t.Fatalf("the suppressed message reached the phone: %+v", got)
		}
	}
	if strings.Contains(logs.String(), phone) {
		t.Fatal("the logs name the patient's number in clear")
	}

	// Input is checked; WeChat pushes go through (encrypted, signed).
	for _, c := range []struct{ url, body string }{
		{patients + "/dev/patients/not-a-number/sms", `{"body":"1"}`},
		{patients + "/dev/patients/" + phone + "/sms", `{"body":""}`},
		{patients + "/dev/patients/bad%20openid/wechat", `{"body":"1"}`},
	} {
		resp, err := http.Post(c.url, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("POST %s %s = %d, want 400", c.url, c.body, resp.StatusCode)
		}
	}
	var wc struct {
		Status int `json:"gateway_status"`
	}
	patientPost(t, patients+"/dev/patients/oDevPatient000000000000001/wechat", `{"body":"1"}`, &wc)
	if wc.Status != 200 {
		t.Fatalf("the WeChat push was answered %d\n%s", wc.Status, logs.String())
	}
}

type patientMessage struct {
	At     time.Time
	Body   string
	Status string
}

func patientMessages(t *testing.T, base, phone string) []patientMessage {
	t.Helper()
	var v struct{ Messages []patientMessage }
	patientGet(t, base+"/dev/patients/"+phone+"/messages", &v)
	return v.Messages
}

func patientPost(t *testing.T, url, body string, v any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s = %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestDevPatientPressesKeysAndReadsWeChatAndMail(t *testing.T) {
	m, _, logs := startDevTest(t, regexp.MustCompile(`(?s)API\s+(http://127\.0\.0\.1:\d+).*API key\s+(\S+).*Patient phone\s+(http://127\.0\.0\.1:\d+)/dev/patients/`))
	api, key, patients := m[1], m[2], m[3]
	const (
		phone  = "+14155550177"
		openid = "oDevPatient000000000000077"
		email  = "Pat.Example@Example.org"
	)

	// A call with a question; the simulated patient presses 1, then the
	// developer presses 3 ("talk to a nurse") through the keypad.
	id := postExample(t, api, key, `{"channel":"voice","to":{"phone":"`+phone+`"},"body":"This is Riverside Clinic.","gather":{"prompt":"Press 1 if you feel better, 2 if not, 3 to talk to a nurse.","digits":"123"}}`)
	if got := waitStatus(t, api, key, id, "delivered"); got != "delivered" {
		t.Fatalf("the call ended %q\n%s", got, logs.String())
	}
	var press struct {
		Status  int    `json:"gateway_status"`
		CallSID string `json:"call_sid"`
		Digits  string
		Says    string
	}
	patientPost(t, patients+"/dev/patients/"+phone+"/keypad", `{"digits":"3"}`, &press)
	if press.Status != 200 || press.Digits != "3" || !strings.HasPrefix(press.CallSID, "CA") {
		t.Fatalf("the press: %+v\n%s", press, logs.String())
	}
	if got := answers(t, api, key, id); !slices.Equal(got, []string{"1", "3"}) {
		t.Fatalf("the call's answers are %q, want the simulated 1 then the pressed 3", got)
	}

	// The gateway's gather webhook checks the signature the keypad made: a
	// press signed with another token is refused and records nothing.
	form := url.Values{"AccountSid": {"AC00000000000000000000000000000000"}, "CallSid": {press.CallSID}, "Digits": {"2"},
		"From": {"+15005550006"}, "To": {phone}, "CallStatus": {"in-progress"}}
	target := api + twilio.VoiceGatherPath + "?m=" + url.QueryEscape(id)
	req, _ := http.NewRequest("POST", target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign("forged-token", target, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a forged press answered %d, want 403", resp.StatusCode)
	}
	if got := answers(t, api, key, id); len(got) != 2 {
		t.Fatalf("a forged press was recorded: %q", got)
	}
	resp, err = http.Post(patients+"/dev/patients/+14155550166/keypad", "application/json", strings.NewReader(`{"digits":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a press with no call answered %d, want 404", resp.StatusCode)
	}

	// What the WeChat user and the mailbox received.
	id = postExample(t, api, key, `{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"body":"复诊提醒","wechat":{"template_id":"TPL-followup","data":{"time":"明天上午10点"}}}`)
	// WeChat reports the template message delivered (TEMPLATESENDJOBFINISH).
	if got := waitStatus(t, api, key, id, "delivered"); got != "delivered" {
		t.Fatalf("the WeChat message ended %q\n%s", got, logs.String())
	}
	var wc struct {
		Messages []struct{ Kind, TemplateID, Body, Status string }
	}
	patientGet(t, patients+"/dev/patients/"+openid+"/wechat/messages", &wc)
	if len(wc.Messages) != 1 || wc.Messages[0].Kind != "template" || !strings.Contains(wc.Messages[0].Body, "time: 明天上午10点") || wc.Messages[0].Status != "sent" {
		t.Fatalf("the WeChat user received %+v", wc.Messages)
	}
	id = postExample(t, api, key, `{"channel":"email","to":{"email":"`+email+`"},"subject":"Your results are ready","body":"Please sign in to the patient portal."}`)
	if got := waitStatus(t, api, key, id, "delivered"); got != "delivered" {
		t.Fatalf("the email ended %q\n%s", got, logs.String())
	}
	var mail struct {
		Messages []struct{ Subject, Text string }
	}
	patientGet(t, patients+"/dev/patients/pat.example@example.org/mail", &mail)
	if len(mail.Messages) != 1 || mail.Messages[0].Subject != "Your results are ready" || !strings.Contains(mail.Messages[0].Text, "patient portal") {
		t.Fatalf("the mailbox received %+v", mail.Messages)
	}

	for _, who := range []string{phone, openid, email, strings.ToLower(email)} {
		if strings.Contains(logs.String(), who) {
			t.Fatalf("the logs name %s in clear", who)
		}
	}
}

// answers returns the keys recorded as the call's answers, in order.
func answers(t *testing.T, api, key, id string) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", api+"/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Events []struct {
			Answer *struct{ Digits string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET the message = %d, %v", resp.StatusCode, err)
	}
	var out []string
	for _, e := range v.Events {
		if e.Answer != nil && e.Answer.Digits != "" {
			out = append(out, e.Answer.Digits)
		}
	}
	return out
}

func patientGet(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d, %v", url, resp.StatusCode, err)
	}
}
