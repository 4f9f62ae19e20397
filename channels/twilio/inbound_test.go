package twilio_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/internal/ledger"
)

func incoming(body string) url.Values {
	return url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {testSID}, "From": {"+14155550123"},
		"To": {testFrom}, "Body": {body}, "NumSegments": {"1"}}
}

func TestInboundMessagesAreVerifiedAndAnsweredWithTwiML(t *testing.T) {
	s := newSMS(t, twilio.DefaultAPIURL, nil)
	want := []channels.InboundMessage{{Channel: "sms", ProviderID: sid, From: ledger.Recipient{Phone: "+14155550123"}, To: testFrom, Body: "STOP"}}
	channeltest.RunInbound(t, s, testPublic, sign, []channeltest.InboundCase{
		{Label: "a signed message is handed to the receiver and its reply sent as TwiML", Method: "POST", Path: twilio.InboundPath,
			Form: incoming("STOP"), Signed: true, InboundReply: "You are unsubscribed",
			ExpectedStatus: 200, ExpectedBodyContains: []string{"<Response><Message>You are unsubscribed</Message></Response>"}, ExpectedInbounds: want},
		{Label: "no reply is an empty Response", Method: "POST", Path: twilio.InboundPath, Form: incoming("STOP"), Signed: true,
			ExpectedStatus: 200, ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n<Response></Response>", ExpectedInbounds: want},
		{Label: "an unsigned message is forbidden and not processed", Method: "POST", Path: twilio.InboundPath, Form: incoming("STOP"),
			ExpectedStatus: 403},
		{Label: "a forged signature is forbidden", Method: "POST", Path: twilio.InboundPath, Form: incoming("STOP"),
			Header: map[string]string{"X-Twilio-Signature": "AAAA"}, ExpectedStatus: 403},
		{Label: "a reply text that looks like markup is escaped", Method: "POST", Path: twilio.InboundPath, Form: incoming("HELP"), Signed: true,
			InboundReply: "a < b & c", ExpectedStatus: 200, ExpectedBodyContains: []string{"a &lt; b &amp; c"},
			ExpectedInbounds: []channels.InboundMessage{{Channel: "sms", ProviderID: sid, From: ledger.Recipient{Phone: "+14155550123"}, To: testFrom, Body: "HELP"}}},
		{Label: "a message for another account is ignored", Method: "POST", Path: twilio.InboundPath,
			Form: func() url.Values {
				f := incoming("STOP")
				f.Set("AccountSid", "ACffffffffffffffffffffffffffffffff")
				return f
			}(), Signed: true,
			ExpectedStatus: 200},
		{Label: "a storage outage answers 503 so Twilio retries", Method: "POST", Path: twilio.InboundPath, Form: incoming("STOP"), Signed: true,
			ReceiverErr: errors.New("redis down"), ExpectedStatus: 503},
	})
}

func FuzzParseInbound(f *testing.F) {
	f.Add("MessageSid=" + sid + "&From=%2B14155550123&To=%2B15005550006&Body=STOP")
	f.Add("SmsSid=" + sid + "&From=x&To=y&Body=%E9%80%80%E8%AE%A2")
	f.Add("MessageSid=SM&Body=%ff")
	f.Fuzz(func(t *testing.T, body string) {
		form, _ := url.ParseQuery(body)
		in, err := twilio.ParseInbound(form)
		if err != nil {
			return
		}
		if !strings.HasPrefix(in.MessageSid, "SM") && !strings.HasPrefix(in.MessageSid, "MM") || in.From == "" || in.To == "" {
			t.Fatalf("accepted %+v", in)
		}
	})
}
