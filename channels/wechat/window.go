package wechat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Interaction is a user action that lets the official account answer with
// customer-service messages for a while.
type Interaction int

// Interactions reported by the inbound webhook.
const (
	// UserMessage: the user sent a message. 5 messages within 48 hours.
	UserMessage Interaction = iota + 1
	// MenuClick: the user clicked a custom menu. 3 messages within 1 minute.
	MenuClick
	// Follow: the user followed the official account. 3 messages within 1 minute.
	Follow
	// Scan: the user scanned a parametric QR code. 3 messages within 1 minute.
	Scan
)

func (k Interaction) String() string {
	switch k {
	case UserMessage:
		return "user_message"
	case MenuClick:
		return "menu_click"
	case Follow:
		return "follow"
	case Scan:
		return "scan"
	}
	return "interaction(" + strconv.Itoa(int(k)) + ")"
}

// windowRule is the window an interaction opens.
type windowRule struct {
	length time.Duration
	quota  int
}

// windowRules are WeChat's customer-service windows (tests shorten them).
type windowRules struct {
	user, event windowRule
}

var defaultWindowRules = windowRules{
	user:  windowRule{48 * time.Hour, 5},
	event: windowRule{time.Minute, 3},
}

func (r windowRules) of(k Interaction) (windowRule, bool) {
	switch k {
	case UserMessage:
		return r.user, true
	case MenuClick, Follow, Scan:
		return r.event, true
	}
	return windowRule{}, false
}

// Window tracks, per openid, WeChat's customer-service window: after a user
// interaction the official account may send a few customer-service messages
// for a while; outside it only template messages reach the user.
//
// An openid has one window. A new interaction's window replaces the current
// one unless the current one is still open and gives more: more messages
// left, or as many messages for longer. So a new user message always renews
// a user-message window (5 messages, 48 hours from now), and a menu click
// within a fresh 48-hour window (5 left) changes nothing, but one after four
// of the five messages were used opens 3 messages for a minute. WeChat
// answers 45015/45047 when the gateway's view is too generous; Send then
// closes the window and falls back to a template.
//
// The state lives in Redis, shared by every worker; a message of the quota
// is taken atomically before a customer-service send, so workers cannot
// exceed it together.
type Window struct {
	rdb   redis.UniversalClient
	appID string
	rules windowRules
	now   func() time.Time
}

// WindowState is an openid's customer-service window as the gateway knows it.
type WindowState struct {
	// Open means a customer-service message may be sent now: the window has
	// not expired and messages of its quota are left.
	Open bool
	// Remaining is how many customer-service messages are left (0 once expired).
	Remaining int
	// Expires is when the window closes; zero when there is none.
	Expires time.Time
	// OpenedBy is the interaction that opened the window; 0 when there is none.
	OpenedBy Interaction
}

// Touch records a user interaction at the given time (the inbound event's
// CreateTime), opening or renewing the openid's window.
func (w *Window) Touch(ctx context.Context, openid string, kind Interaction, at time.Time) error {
	if openid == "" {
		return errors.New("wechat: Touch needs an openid")
	}
	rule, ok := w.rules.of(kind)
	if !ok {
		return fmt.Errorf("wechat: unknown interaction %d", int(kind))
	}
	now := w.now()
	exp := at.Add(rule.length)
	// The key outlives the window a little (the clock of Redis and ours may
	// differ); the scripts compare exp with our clock, not with the TTL.
	ttl := exp.Sub(now) + time.Minute
	return touchScript.Run(ctx, w.rdb, []string{windowKey(w.appID, openid)},
		now.UnixMilli(), exp.UnixMilli(), rule.quota, int(kind), ttl.Milliseconds()).Err()
}

// State returns the openid's window.
func (w *Window) State(ctx context.Context, openid string) (WindowState, error) {
	vals, err := w.rdb.HMGet(ctx, windowKey(w.appID, openid), "exp", "left", "kind").Result()
	if err != nil {
		return WindowState{}, err
	}
	exp, _ := strconv.ParseInt(str(vals[0]), 10, 64)
	left, _ := strconv.Atoi(str(vals[1]))
	kind, _ := strconv.Atoi(str(vals[2]))
	if exp == 0 {
		return WindowState{}, nil
	}
	st := WindowState{Expires: time.UnixMilli(exp), OpenedBy: Interaction(kind)}
	if st.Expires.After(w.now()) {
		st.Remaining = left
		st.Open = left > 0
	}
	return st, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// slot is a message taken from a window's quota; exp identifies the window.
type slot struct {
	taken bool
	exp   string
}

// take atomically takes one message of the openid's open window, if any.
func (w *Window) take(ctx context.Context, openid string) (slot, error) {
	res, err := consumeScript.Run(ctx, w.rdb, []string{windowKey(w.appID, openid)}, w.now().UnixMilli()).Slice()
	if err != nil {
		return slot{}, err
	}
	if len(res) != 3 {
		return slot{}, fmt.Errorf("wechat: window script answered %d values", len(res))
	}
	taken, _ := res[0].(int64)
	exp, _ := res[2].(string)
	return slot{taken: taken == 1, exp: exp}, nil
}

// close marks the window a message was sent in as used up (WeChat said so).
func (w *Window) close(ctx context.Context, openid string, s slot) error {
	if s.exp == "" || s.exp == "0" {
		return nil
	}
	return closeScript.Run(ctx, w.rdb, []string{windowKey(w.appID, openid)}, s.exp).Err()
}

// refund gives a taken message back (WeChat did not deliver it).
func (w *Window) refund(ctx context.Context, openid string, s slot) error {
	if !s.taken {
		return nil
	}
	return refundScript.Run(ctx, w.rdb, []string{windowKey(w.appID, openid)}, s.exp).Err()
}
