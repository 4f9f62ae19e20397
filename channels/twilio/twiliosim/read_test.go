package twiliosim_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

func TestTheReadSideListsAndFetchesMessagesAsTwilioDoes(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	base := s.URL() + "/2010-04-01/Accounts/" + s.AccountSID() + "/Messages"
	create := func(to, body string) string {
		form := url.Values{"To": {to}, "From": {"+15005550006"}, "Body": {body}}
		req, _ := http.NewRequest(http.MethodPost, base+".json", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(s.AccountSID(), s.AuthToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m struct{ Sid string }
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m.Sid
	}
	get := func(path string, q url.Values, auth bool) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, base+path+"?"+q.Encode(), nil)
		if auth {
			req.SetBasicAuth(s.AccountSID(), s.AuthToken())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	a := create("+14155550101", "first")
	create("+14155550102", "other patient")
	b := create("+14155550101", "second")

	code, page := get(".json", url.Values{"To": {"+14155550101"}, "DateSent>": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}}, true)
	msgs, _ := page["messages"].([]any)
	if code != 200 || len(msgs) != 2 || msgs[0].(map[string]any)["sid"] != b || msgs[1].(map[string]any)["sid"] != a {
		t.Fatalf("list = %d %v", code, page)
	}
	if _, page := get(".json", url.Values{"DateSent>": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}, true); len(page["messages"].([]any)) != 0 {
		t.Fatalf("messages sent before the filter were listed: %v", page)
	}
	if code, _ := get(".json", url.Values{"DateSent": {"yesterday"}}, true); code != 400 {
		t.Fatalf("a bad date = %d", code)
	}
	code, m := get("/"+a+".json", nil, true)
	if code != 200 || m["status"] != "delivered" || m["body"] != "first" || m["date_sent"] == nil {
		t.Fatalf("fetch = %d %v", code, m)
	}
	if code, _ := get("/"+a+".json", nil, false); code != 401 {
		t.Fatalf("an unauthenticated fetch = %d", code)
	}
	if fetches, lists := s.Lookups(); fetches != 1 || lists != 2 {
		t.Fatalf("lookups counted %d fetches, %d lists", fetches, lists)
	}
}
