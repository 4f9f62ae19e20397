package twilio_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const (
	testSID    = "AC0123456789abcdef0123456789abcdef"
	testToken  = "0123456789abcdef0123456789abcdef"
	testFrom   = "+15005550006"
	testPublic = "https://gateway.example-clinic.test"
	testMsgID  = "01JD0000000000000000000000"
	smsPath    = "/2010-04-01/Accounts/" + testSID + "/Messages.json"
)

func newSMS(t *testing.T, apiURL string, tr http.RoundTripper, mutate ...func(*twilio.Config)) *twilio.SMS {
	t.Helper()
	cfg := twilio.Config{AccountSID: testSID, AuthToken: testToken, From: testFrom, APIURL: apiURL,
		PublicURL: testPublic, Timeout: 500 * time.Millisecond, Transport: tr}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := twilio.NewSMS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func factory(mutate ...func(*twilio.Config)) channeltest.ChannelFactory {
	return func(t *testing.T, apiURL string, tr http.RoundTripper) channels.Channel {
		return newSMS(t, apiURL, tr, mutate...)
	}
}

var msg = channels.Message{ID: testMsgID, Tenant: "clinic", To: ledger.Recipient{Phone: "+14155550100"}, Body: "Your appointment is tomorrow at 10:00"}

const created = `{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","account_sid":"` + testSID + `"}`

func twilioError(code, status int, message string) string {
	return `{"code":` + strconv.Itoa(code) + `,"message":"` + message + `","more_info":"https://www.twilio.com/docs/errors/` + strconv.Itoa(code) + `","status":` + strconv.Itoa(status) + `}`
}

func fail(status, code int, message string, headers ...string) map[string]channeltest.MockResponse {
	r := channeltest.MockResponse{Status: status, Body: twilioError(code, status, message)}
	if len(headers) == 2 {
		r.Headers = map[string]string{headers[0]: headers[1]}
	}
	return map[string]channeltest.MockResponse{"POST " + smsPath: r}
}

func TestSMSSendsTheExactTwilioRequestAndClassifiesEveryAnswer(t *testing.T) {
	ok := map[string]channeltest.MockResponse{"POST " + smsPath: {Status: 201, Body: created}}
	channeltest.RunOutbound(t, factory(), []channeltest.OutboundCase{
		{
			Label:   "an accepted message returns Twilio's SID and posts To, From, Body and the status callback URL",
			Message: msg, Responses: ok, ExpectedPath: smsPath,
			ExpectedForm: url.Values{"To": {"+14155550100"}, "From": {testFrom}, "Body": {msg.Body},
				"StatusCallback": {testPublic + "/webhooks/twilio/status?m=" + testMsgID}},
			ExpectedAbsent:     []string{"MessagingServiceSid"},
			ExpectedHeader:     map[string]string{"Authorization": "Basic " + basic(testSID, testToken)},
			ExpectedProviderID: "SM0123456789abcdef0123456789abcdef",
		},
		{Label: "a 500 is retryable", Message: msg, Responses: fail(500, 20500, "Internal Server Error"),
			ExpectedClass: channels.Retryable, ExpectedCode: "20500"},
		{Label: "a 503 without a Twilio body is retryable", Message: msg,
			Responses:     map[string]channeltest.MockResponse{"POST " + smsPath: {Status: 503, Body: "<html>upstream down</html>", Headers: map[string]string{"Content-Type": "text/html"}}},
			ExpectedClass: channels.Retryable, ExpectedCode: "http_503"},
		{Label: "a 429 is throttled and carries Retry-After", Message: msg, Responses: fail(429, 20429, "Too Many Requests", "Retry-After", "7"),
			ExpectedClass: channels.Throttled, ExpectedCode: "20429", ExpectedRetryAfter: 7 * time.Second},
		{Label: "a 429 without Retry-After is throttled with no delay given", Message: msg, Responses: fail(429, 20429, "Too Many Requests"),
			ExpectedClass: channels.Throttled, ExpectedCode: "20429"},
		{Label: "queue overflow 30001 is throttled", Message: msg, Responses: fail(400, 30001, "Queue overflow"),
			ExpectedClass: channels.Throttled, ExpectedCode: "30001"},
		{Label: "an invalid To number 21211 is permanent", Message: msg, Responses: fail(400, 21211, "The 'To' number +14155550100 is not a valid phone number."),
			ExpectedClass: channels.Permanent, ExpectedCode: "21211"},
		{Label: "a landline 21614 is permanent", Message: msg, Responses: fail(400, 21614, "not a mobile number"),
			ExpectedClass: channels.Permanent, ExpectedCode: "21614"},
		{Label: "carrier filtering 30007 is permanent", Message: msg, Responses: fail(400, 30007, "filtered"),
			ExpectedClass: channels.Permanent, ExpectedCode: "30007"},
		{Label: "a recipient who replied STOP 21610 is opted out", Message: msg, Responses: fail(400, 21610, "unsubscribed recipient"),
			ExpectedClass: channels.OptedOut, ExpectedCode: "21610"},
		{Label: "rejected credentials 20003 are retried: a configuration fault must not lose messages", Message: msg,
			Responses: fail(401, 20003, "Authenticate"), ExpectedClass: channels.Retryable, ExpectedCode: "20003"},
		{Label: "an unlisted 4xx code is permanent", Message: msg, Responses: fail(400, 21999, "something else"),
			ExpectedClass: channels.Permanent, ExpectedCode: "21999"},
		{Label: "a provider that never answers in time is retryable and unconfirmed", Message: msg,
			Responses:     map[string]channeltest.MockResponse{"POST " + smsPath: {Status: 201, Body: created, Delay: 3 * time.Second}},
			ExpectedClass: channels.Retryable, ExpectedCode: "timeout", ExpectUnconfirmed: true},
		{Label: "a refused connection is retryable and known not to have reached Twilio", Message: msg, Unreachable: true,
			ExpectedClass: channels.Retryable, ExpectedCode: "connect"},
		{Label: "a message without a phone number is permanent and never sent", Message: channels.Message{ID: testMsgID, Body: "x"},
			ExpectedClass: channels.Permanent, ExpectedCode: "no_recipient"},
	})
}

func TestSMSUsesTheMessagingServiceInsteadOfFrom(t *testing.T) {
	mg := "MG0123456789abcdef0123456789abcdef"
	channeltest.RunOutbound(t, factory(func(c *twilio.Config) { c.MessagingServiceSID = mg }), []channeltest.OutboundCase{{
		Label: "MessagingServiceSid is sent and From is not", Message: msg,
		Responses:    map[string]channeltest.MockResponse{"POST " + smsPath: {Status: 201, Body: created}},
		ExpectedPath: smsPath, ExpectedForm: url.Values{"MessagingServiceSid": {mg}}, ExpectedAbsent: []string{"From"},
		ExpectedProviderID: "SM0123456789abcdef0123456789abcdef",
	}})
}

func TestProviderErrorMessagesAreStoredWithoutPhoneNumbers(t *testing.T) {
	srv := twiliosim.New(twiliosim.Options{AccountSID: testSID, AuthToken: testToken})
	defer srv.Close()
	s := newSMS(t, srv.URL(), channeltest.LoopbackOnly(nil))
	srv.Script(twiliosim.Fail(400, 21211, "The 'To' number +14155550100 is not a valid phone number."))
	_, err := s.Send(context.Background(), msg)
	var se *channels.SendError
	if !errors.As(err, &se) {
		t.Fatalf("want SendError, got %v", err)
	}
	if strings.Contains(se.Message, "4155550100") || !strings.Contains(se.Message, "[number]") {
		t.Fatalf("stored message %q must mask the number", se.Message)
	}
}

func TestSMSAgainstTheSimulatorEndToEnd(t *testing.T) {
	sim := twiliosim.New(twiliosim.Options{AccountSID: testSID, AuthToken: testToken})
	defer sim.Close()
	s := newSMS(t, sim.URL(), channeltest.LoopbackOnly(nil))
	res, err := s.Send(context.Background(), msg)
	if err != nil || !strings.HasPrefix(res.ProviderID, "SM") {
		t.Fatalf("Send = %+v, %v", res, err)
	}
	reqs := sim.Requests()
	if len(reqs) != 1 || reqs[0].Form.Get("To") != "+14155550100" || reqs[0].Form.Get("StatusCallback") != s.StatusCallbackURL(testMsgID) {
		t.Fatalf("simulator saw %+v", reqs)
	}
	_, err = s.Send(context.Background(), channels.Message{ID: testMsgID, To: ledger.Recipient{Phone: twiliosim.MagicToNotMobile}, Body: "x"})
	if se := channels.AsSendError(err); se.Class != channels.Permanent || se.Code != "21614" {
		t.Fatalf("magic landline number: %v", err)
	}
}

func TestSMSNeverReachesANonLoopbackHost(t *testing.T) {
	s := newSMS(t, twilio.DefaultAPIURL, channeltest.LoopbackOnly(nil))
	_, err := s.Send(context.Background(), msg)
	if !errors.Is(err, channeltest.ErrNotLoopback) {
		t.Fatalf("want the loopback guard to refuse api.twilio.com, got %v", err)
	}
}

func basic(u, p string) string {
	r, _ := http.NewRequest("GET", "http://x", nil)
	r.SetBasicAuth(u, p)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}
