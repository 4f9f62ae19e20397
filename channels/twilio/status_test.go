package twilio_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const sid = "SM0123456789abcdef0123456789abcdef"

func callback(status string, extra ...string) url.Values {
	v := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {status}, "SmsStatus": {status},
		"AccountSid": {testSID}, "From": {testFrom}, "To": {"+14155550100"}, "ApiVersion": {"2010-04-01"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

func sign(fullURL string, form url.Values) (string, string) {
	return "X-Twilio-Signature", twiliosim.Sign(testToken, fullURL, form)
}

func update(status ledger.Status, provider, code, message string) []channeltest.Update {
	return []channeltest.Update{{MessageID: testMsgID, ProviderUpdate: ledger.ProviderUpdate{Channel: "sms", ProviderID: sid,
		Status: status, ProviderStatus: provider, ErrorCode: code, ErrorMessage: message}}}
}

func TestStatusCallbacksAreVerifiedParsedAndRecorded(t *testing.T) {
	s := newSMS(t, twilio.DefaultAPIURL, nil)
	path := twilio.StatusPath + "?m=" + testMsgID
	channeltest.RunInbound(t, s, testPublic, sign, []channeltest.InboundCase{
		{Label: "a signed delivered callback records delivered", Method: "POST", Path: path, Form: callback("delivered"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: update(ledger.StatusDelivered, "delivered", "", "")},
		{Label: "a signed sent callback records sent", Method: "POST", Path: path, Form: callback("sent"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: update(ledger.StatusSent, "sent", "", "")},
		{Label: "an undelivered callback carries Twilio's error code", Method: "POST", Path: path, Form: callback("undelivered", "ErrorCode", "30003"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: update(ledger.StatusUndelivered, "undelivered", "30003", "unreachable destination handset")},
		{Label: "a read receipt counts as delivered", Method: "POST", Path: path, Form: callback("read"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: update(ledger.StatusDelivered, "read", "", "")},
		{Label: "a callback without a signature is forbidden and records nothing", Method: "POST", Path: path, Form: callback("delivered"),
			ExpectedStatus: 403},
		{Label: "a forged signature is forbidden", Method: "POST", Path: path, Form: callback("delivered"),
			Header: map[string]string{"X-Twilio-Signature": "bm90IGEgcmVhbCBzaWduYXR1cmU="}, ExpectedStatus: 403},
		{Label: "a signature for another message id is forbidden (the query is signed)", Method: "POST", Path: path,
			Form:           callback("delivered"),
			Header:         map[string]string{"X-Twilio-Signature": twiliosim.Sign(testToken, testPublic+twilio.StatusPath+"?m=01JD0000000000000000000001", callback("delivered"))},
			ExpectedStatus: 403},
		{Label: "a signature made with another auth token is forbidden", Method: "POST", Path: path, Form: callback("delivered"),
			Header: map[string]string{"X-Twilio-Signature": twiliosim.Sign("ffffffffffffffffffffffffffffffff", testPublic+path, callback("delivered"))}, ExpectedStatus: 403},
		{Label: "a signed but malformed callback is acknowledged and ignored", Method: "POST", Path: path,
			Form: url.Values{"MessageSid": {"nonsense"}, "MessageStatus": {"delivered"}}, Signed: true, ExpectedStatus: 200},
		{Label: "a callback for another Twilio account is ignored", Method: "POST", Path: path,
			Form: callback("delivered", "AccountSid", "ACffffffffffffffffffffffffffffffff"), Signed: true, ExpectedStatus: 200},
		{Label: "an unknown provider status is acknowledged and ignored", Method: "POST", Path: path, Form: callback("teleported"), Signed: true,
			ExpectedStatus: 200},
		{Label: "a storage outage answers 503 so Twilio retries", Method: "POST", Path: path, Form: callback("delivered"), Signed: true,
			ReceiverErr: errors.New("redis down"), ExpectedStatus: 503},
	})
}

func TestParseStatusCallback(t *testing.T) {
	cases := []struct {
		name    string
		form    url.Values
		want    ledger.Status
		wantErr bool
	}{
		{"SmsSid and SmsStatus are accepted for older callbacks", url.Values{"SmsSid": {sid}, "SmsStatus": {"sent"}}, ledger.StatusSent, false},
		{"status is case-insensitive", url.Values{"MessageSid": {sid}, "MessageStatus": {"DELIVERED"}}, ledger.StatusDelivered, false},
		{"a missing sid is malformed", url.Values{"MessageStatus": {"sent"}}, "", true},
		{"a sid of the wrong kind is malformed", url.Values{"MessageSid": {"CA0123456789abcdef0123456789abcdef"}, "MessageStatus": {"sent"}}, "", true},
		{"a non-numeric error code is malformed", url.Values{"MessageSid": {sid}, "MessageStatus": {"failed"}, "ErrorCode": {"x1"}}, "", true},
		{"a missing status is malformed", url.Values{"MessageSid": {sid}}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cb, err := twilio.ParseStatusCallback(c.form, url.Values{})
			if (err != nil) != c.wantErr || cb.Status != c.want {
				t.Fatalf("got %+v, %v", cb, err)
			}
		})
	}
}

func FuzzParseStatusCallback(f *testing.F) {
	f.Add("MessageSid="+sid+"&MessageStatus=delivered", "m="+testMsgID)
	f.Add("SmsSid="+sid+"&SmsStatus=undelivered&ErrorCode=30003", "")
	f.Add("MessageSid=SM&MessageStatus=%ff%fe", "m=%zz")
	f.Add(strings.Repeat("a=b&", 100), "m=1&m=2")
	f.Fuzz(func(t *testing.T, body, query string) {
		form, _ := url.ParseQuery(body)
		q, _ := url.ParseQuery(query)
		cb, err := twilio.ParseStatusCallback(form, q)
		if err != nil {
			return
		}
		if !strings.HasPrefix(cb.MessageSid, "SM") && !strings.HasPrefix(cb.MessageSid, "MM") {
			t.Fatalf("accepted sid %q", cb.MessageSid)
		}
		if cb.Status != "" && !cb.Status.Valid() {
			t.Fatalf("mapped to invalid status %q", cb.Status)
		}
		if cb.ErrorCode != "" && cb.ErrorMessage == "" {
			t.Fatalf("error code without message")
		}
	})
}
