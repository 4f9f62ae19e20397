//go:build dev

package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
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
	resp, err := http.Get(base + "/dev/patients/" + phone + "/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Messages []patientMessage }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET messages = %d, %v", resp.StatusCode, err)
	}
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
