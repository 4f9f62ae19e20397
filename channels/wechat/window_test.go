package wechat_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// sendAll sends n auto messages (with a template to fall back on) and
// returns the route each took: "cs" or "tmpl".
func sendAll(t *testing.T, ch *wechat.Channel, n int) []string {
	t.Helper()
	var routes []string
	for i := range n {
		m := msg(template("auto"))
		m.ID = fmt.Sprintf("m%02d", i)
		res, err := ch.Send(context.Background(), m)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		routes = append(routes, strings.SplitN(res.ProviderID, ":", 2)[0])
	}
	return routes
}

func routes(cs, tmpl int) []string {
	var out []string
	for range cs {
		out = append(out, "cs")
	}
	for range tmpl {
		out = append(out, "tmpl")
	}
	return out
}

func TestEachInteractionOpensItsWindowAndTemplatesFollowOnceItIsUsedUp(t *testing.T) {
	tests := []struct {
		name    string
		kind    wechat.Interaction
		quota   int
		expires time.Duration
	}{
		{"a user message allows 5 customer-service messages within 48 hours", wechat.UserMessage, 5, 48 * time.Hour},
		{"a menu click allows 3 customer-service messages within a minute", wechat.MenuClick, 3, time.Minute},
		{"a follow allows 3 customer-service messages within a minute", wechat.Follow, 3, time.Minute},
		{"a scan allows 3 customer-service messages within a minute", wechat.Scan, 3, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
			ctx := context.Background()
			e.interact(t, sim, ch, testOpenID, tt.kind)
			st, err := ch.Window().State(ctx, testOpenID)
			want := wechat.WindowState{Open: true, Remaining: tt.quota, Expires: e.clock.Now().Add(tt.expires), OpenedBy: tt.kind}
			if err != nil || !st.Expires.Equal(want.Expires) || st.Open != want.Open || st.Remaining != want.Remaining || st.OpenedBy != want.OpenedBy {
				t.Fatalf("State = %+v, %v; want %+v", st, err, want)
			}
			if got := sendAll(t, ch, tt.quota+2); fmt.Sprint(got) != fmt.Sprint(routes(tt.quota, 2)) {
				t.Fatalf("routes %v, want %v", got, routes(tt.quota, 2))
			}
			if custom, tmpl := sim.Accepted(); custom != tt.quota || tmpl != 2 {
				t.Fatalf("simulator accepted %d custom and %d template messages", custom, tmpl)
			}
			if st, _ := ch.Window().State(ctx, testOpenID); st.Open || st.Remaining != 0 {
				t.Fatalf("State after the quota = %+v, want closed", st)
			}
		})
	}
}

func TestAWindowExpiresAfterItsLength(t *testing.T) {
	tests := []struct {
		name string
		kind wechat.Interaction
		wait time.Duration
	}{
		{"48 hours after a user message the template is used", wechat.UserMessage, 48 * time.Hour},
		{"a minute after a menu click the template is used", wechat.MenuClick, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
			ctx := context.Background()
			e.interact(t, sim, ch, testOpenID, tt.kind)
			e.clock.Advance(tt.wait - time.Second)
			if got := sendAll(t, ch, 1); got[0] != "cs" {
				t.Fatalf("a second before expiry: %v", got)
			}
			e.clock.Advance(time.Second)
			if st, _ := ch.Window().State(ctx, testOpenID); st.Open || st.Remaining != 0 {
				t.Fatalf("State at expiry = %+v, want closed", st)
			}
			if got := sendAll(t, ch, 1); got[0] != "tmpl" {
				t.Fatalf("at expiry: %v", got)
			}
		})
	}
}

func TestShortenedWindowsExpireInRealTime(t *testing.T) {
	e := newEnv(t)
	_, ch := e.simChannel(t, wechatsim.Options{})
	wechat.SetClock(ch, time.Now)
	wechat.SetWindowLengths(ch, 300*time.Millisecond, 100*time.Millisecond)
	ctx := context.Background()
	if err := ch.Window().Touch(ctx, testOpenID, wechat.MenuClick, time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, _ := ch.Window().State(ctx, testOpenID); !st.Open {
		t.Fatalf("fresh window %+v", st)
	}
	time.Sleep(150 * time.Millisecond)
	if got := sendAll(t, ch, 1); got[0] != "tmpl" {
		t.Fatalf("after the shortened event window: %v", got)
	}
}

func TestANewInteractionReplacesTheWindowOnlyWhenItGivesMore(t *testing.T) {
	type step struct {
		sends int // auto sends before the touch
		touch wechat.Interaction
		after time.Duration // clock advance before the touch
	}
	tests := []struct {
		name      string
		steps     []step
		remaining int
		expiresIn time.Duration // from the final clock
		openedBy  wechat.Interaction
	}{
		{"a menu click inside a fresh 48-hour window changes nothing",
			[]step{{touch: wechat.UserMessage}, {touch: wechat.MenuClick, after: time.Hour}}, 5, 47 * time.Hour, wechat.UserMessage},
		{"a menu click with 3 left of the 48-hour window keeps the longer window",
			[]step{{touch: wechat.UserMessage}, {sends: 2, touch: wechat.MenuClick}}, 3, 48 * time.Hour, wechat.UserMessage},
		{"a menu click with 1 left of the 48-hour window opens 3 messages for a minute",
			[]step{{touch: wechat.UserMessage}, {sends: 4, touch: wechat.MenuClick}}, 3, time.Minute, wechat.MenuClick},
		{"a new user message renews the used 48-hour window",
			[]step{{touch: wechat.UserMessage}, {sends: 3, touch: wechat.UserMessage, after: 10 * time.Hour}}, 5, 48 * time.Hour, wechat.UserMessage},
		{"a user message after a menu click opens the 48-hour window",
			[]step{{touch: wechat.MenuClick}, {touch: wechat.UserMessage, after: 10 * time.Second}}, 5, 48 * time.Hour, wechat.UserMessage},
		{"a second menu click renews a used-up event window",
			[]step{{touch: wechat.MenuClick}, {sends: 3, touch: wechat.Scan, after: 10 * time.Second}}, 3, time.Minute, wechat.Scan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
			ctx := context.Background()
			for _, s := range tt.steps {
				sendAll(t, ch, s.sends)
				e.clock.Advance(s.after)
				e.interact(t, sim, ch, testOpenID, s.touch)
			}
			st, err := ch.Window().State(ctx, testOpenID)
			if err != nil || !st.Open || st.Remaining != tt.remaining || !st.Expires.Equal(e.clock.Now().Add(tt.expiresIn)) || st.OpenedBy != tt.openedBy {
				t.Fatalf("State = %+v (%v); want open, %d left, expiring in %s, opened by %s", st, err, tt.remaining, tt.expiresIn, tt.openedBy)
			}
		})
	}
}

func TestAnInteractionReportedAfterItsWindowWouldHaveClosedOpensNothing(t *testing.T) {
	e := newEnv(t)
	_, ch := e.simChannel(t, wechatsim.Options{})
	ctx := context.Background()
	if err := ch.Window().Touch(ctx, testOpenID, wechat.MenuClick, e.clock.Now().Add(-2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st, _ := ch.Window().State(ctx, testOpenID); st != (wechat.WindowState{}) {
		t.Fatalf("State = %+v, want no window", st)
	}
	if err := ch.Window().Touch(ctx, "", wechat.MenuClick, e.clock.Now()); err == nil {
		t.Fatal("Touch without an openid: want an error")
	}
	if err := ch.Window().Touch(ctx, testOpenID, wechat.Interaction(99), e.clock.Now()); err == nil {
		t.Fatal("Touch with an unknown interaction: want an error")
	}
}

func TestConcurrentWorkersNeverExceedTheWindowQuota(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
	// A second channel on the same Redis stands for another process.
	other := e.channel(t, sim.URL(), channeltest.LoopbackOnly(nil))
	sim.Interact(testOpenID, 5, 48*time.Hour)
	ctx := context.Background()
	if err := ch.Window().Touch(ctx, testOpenID, wechat.UserMessage, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := range 20 {
		wg.Go(func() {
			c := ch
			if i%2 == 1 {
				c = other
			}
			m := msg(template("auto"))
			m.ID = fmt.Sprintf("m%02d", i)
			res, err := c.Send(ctx, m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got["error: "+err.Error()]++
				return
			}
			got[strings.SplitN(res.ProviderID, ":", 2)[0]]++
		})
	}
	wg.Wait()
	if got["cs"] != 5 || got["tmpl"] != 15 || len(got) != 2 {
		t.Fatalf("routes %v, want exactly 5 customer-service and 15 template messages", got)
	}
	for _, r := range sim.Requests() {
		if r.ErrCode != 0 {
			t.Fatalf("WeChat refused a send (%d): the quota was exceeded; requests %v", r.ErrCode, paths(sim.Requests()))
		}
	}
}

func TestWeChatClosingTheWindowFallsBackToTheTemplateOnce(t *testing.T) {
	tests := []struct {
		name         string
		code         int
		template     bool
		wantProvider string
		wantCode     string
		wantPaths    []string
	}{
		{"45015 with a template sends the template instead", 45015, true, "tmpl:", "",
			[]string{wechatsim.CustomSendPath + "=45015", wechatsim.TemplateSendPath}},
		{"45047 with a template sends the template instead", 45047, true, "tmpl:", "",
			[]string{wechatsim.CustomSendPath + "=45047", wechatsim.TemplateSendPath}},
		{"45015 without a template is permanent 45015", 45015, false, "", "45015",
			[]string{wechatsim.CustomSendPath + "=45015"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{})
			ctx := context.Background()
			e.interact(t, sim, ch, testOpenID, wechat.UserMessage)
			opts := &ledger.WeChatOptions{}
			if tt.template {
				opts = template("auto")
			}
			sim.Script(tt.code)
			res, err := ch.Send(ctx, msg(opts))
			if tt.wantCode == "" {
				if err != nil || !strings.HasPrefix(res.ProviderID, tt.wantProvider) {
					t.Fatalf("Send = %+v, %v; want %s…", res, err, tt.wantProvider)
				}
			} else if se := sendErr(t, err); se.Class != channels.Permanent || se.Code != tt.wantCode {
				t.Fatalf("Send error %v, want permanent %s", se, tt.wantCode)
			}
			if got := paths(sim.Requests()[1:]); fmt.Sprint(got) != fmt.Sprint(tt.wantPaths) {
				t.Fatalf("requests after the token %v, want %v", got, tt.wantPaths)
			}
			if st, _ := ch.Window().State(ctx, testOpenID); st.Open {
				t.Fatalf("State after WeChat closed the window = %+v, want closed", st)
			}
			// The next message goes straight to the template path.
			_, err = ch.Send(ctx, msg(&ledger.WeChatOptions{}))
			if se := sendErr(t, err); se.Code != "no_window_no_template" {
				t.Fatalf("next send without a template: %v, want no_window_no_template", se)
			}
		})
	}
}

func TestTheSimulatorsOwnWindowAgreesWithTheFallback(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
	ctx := context.Background()
	// The gateway believes the window is open; WeChat never saw the interaction.
	if err := ch.Window().Touch(ctx, testOpenID, wechat.UserMessage, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := sendAll(t, ch, 2); fmt.Sprint(got) != "[tmpl tmpl]" {
		t.Fatalf("routes %v", got)
	}
	if custom, tmpl := sim.Accepted(); custom != 0 || tmpl != 2 {
		t.Fatalf("accepted %d custom, %d template", custom, tmpl)
	}
}

func TestAFailedCustomSendGivesItsQuotaBackUnlessItMayHaveBeenDelivered(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*wechatsim.Server)
		remaining int
	}{
		{"system busy (-1) gives the message back", func(s *wechatsim.Server) { s.Script(-1) }, 5},
		{"a user who unfollowed (43004) gives the message back", func(s *wechatsim.Server) { s.Script(43004) }, 5},
		{"a timeout keeps it taken: WeChat may have delivered it", func(s *wechatsim.Server) { s.SetLatency(time.Second) }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{})
			ctx := context.Background()
			// A first message fetches the token, so the setup affects only the send.
			if _, err := ch.Send(ctx, msg(template("template"))); err != nil {
				t.Fatal(err)
			}
			e.interact(t, sim, ch, testOpenID, wechat.UserMessage)
			tt.setup(sim)
			if _, err := ch.Send(ctx, msg(nil)); err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			if st, _ := ch.Window().State(ctx, testOpenID); st.Remaining != tt.remaining {
				t.Fatalf("remaining %d, want %d", st.Remaining, tt.remaining)
			}
		})
	}
}

func TestTheChannelRunsOnRedisCluster(t *testing.T) {
	rs := redistest.StartCluster(t)
	e := &env{rdb: rs.Client(), logs: &logBuffer{}, clock: newClock(time.Date(2026, 3, 10, 9, 0, 0, 0, china))}
	sim, ch := e.simChannel(t, wechatsim.Options{})
	ctx := context.Background()
	e.interact(t, sim, ch, testOpenID, wechat.UserMessage)
	sim.Script(0, 40001, 0, 45015)
	// custom; custom refused for the token then retried; custom refused for the window then the template.
	if got := sendAll(t, ch, 3); fmt.Sprint(got) != "[cs cs tmpl]" {
		t.Fatalf("routes %v", got)
	}
	if sim.TokenFetches() != 2 {
		t.Fatalf("token fetches %d, want 2", sim.TokenFetches())
	}
	if st, err := ch.Window().State(ctx, testOpenID); err != nil || st.Open {
		t.Fatalf("State %+v, %v", st, err)
	}
}
