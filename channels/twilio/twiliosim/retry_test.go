package twiliosim_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

func TestACallbackAnswered5xxIsPostedAgainWhenRetriesAreAsked(t *testing.T) {
	cases := []struct {
		name     string
		retries  int
		failures int32 // how many first attempts the receiver answers 503
		attempts int   // callback attempts recorded
		taken    int32 // callbacks the receiver took
	}{
		{"without retries, a 503 loses the report (Twilio's default)", 0, 1, 2, 1},
		{"with retries, the report arrives after the receiver recovers", 3, 2, 4, 2},
		{"the retries end", 1, 5, 4, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{})
			s.SetCallbackRetries(tc.retries, 5*time.Millisecond)
			var calls, taken atomic.Int32
			rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= tc.failures {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				taken.Add(1)
				w.WriteHeader(http.StatusNoContent)
			}))
			t.Cleanup(rc.Close)
			c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
			if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
				To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(rc.URL + "/cb")}); err != nil {
				t.Fatal(err)
			}
			waitCallbacks(t, s)
			if got := len(s.Callbacks()); got != tc.attempts || taken.Load() != tc.taken {
				t.Fatalf("%d attempts recorded, %d taken; want %d and %d", got, taken.Load(), tc.attempts, tc.taken)
			}
		})
	}
}
