package wechat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

const (
	testAppID  = "wx5f1e2d3c4b5a6978"
	testSecret = "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"
	testOpenID = "oX7pQ2rS9tU4vW1xY6zA3bC8dE5f"
	testMsgID  = "01JD0000000000000000000000"
	testBody   = "Your appointment is tomorrow at 10:00"
	seededTok  = "SEEDED_ACCESS_TOKEN_0123456789"
)

// china is UTC+8, where WeChat's daily quotas reset.
var china = time.FixedZone("CST", 8*3600)

// clock is a controllable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer collects a channel's logs for the no-personal-data checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// assertClean fails when the logs contain any of the secret values.
func (l *logBuffer) assertClean(t *testing.T, secrets ...string) {
	t.Helper()
	logs := l.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs contain %q in clear:\n%s", s, logs)
		}
	}
}

type env struct {
	rdb   *redis.Client
	logs  *logBuffer
	clock *clock
}

func newEnv(t *testing.T) *env {
	return &env{rdb: redistest.Start(t).Client(), logs: &logBuffer{},
		clock: newClock(time.Date(2026, 3, 10, 22, 30, 0, 0, china))}
}

// channel builds a channel on the env's Redis, clock and log buffer.
func (e *env) channel(t *testing.T, apiURL string, tr http.RoundTripper, mutate ...func(*wechat.Config)) *wechat.Channel {
	t.Helper()
	cfg := wechat.Config{AppID: testAppID, AppSecret: testSecret, APIURL: apiURL, Redis: e.rdb, Transport: tr,
		Timeout: 500 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, m := range mutate {
		m(&cfg)
	}
	ch, err := wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wechat.SetClock(ch, e.clock.Now)
	return ch
}

// simChannel builds a simulator and a channel pointed at it.
func (e *env) simChannel(t *testing.T, opts wechatsim.Options, mutate ...func(*wechat.Config)) (*wechatsim.Server, *wechat.Channel) {
	t.Helper()
	if opts.AppID == "" {
		opts.AppID, opts.AppSecret = testAppID, testSecret
	}
	sim := wechatsim.New(opts)
	t.Cleanup(sim.Close)
	return sim, e.channel(t, sim.URL(), channeltest.LoopbackOnly(nil), mutate...)
}

// interact is a user's interaction as it happens: WeChat (the simulator)
// opens its customer-service window, and the push reports it to the
// channel, which opens its own view of the window.
func (e *env) interact(t *testing.T, sim *wechatsim.Server, ch *wechat.Channel, openid string, kind wechat.Interaction) {
	t.Helper()
	quota, length := 3, time.Minute // a menu click, follow or scan
	if kind == wechat.UserMessage {
		quota, length = 5, 48*time.Hour
	}
	sim.Interact(openid, quota, length)
	if err := ch.Window().Touch(context.Background(), openid, kind, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func (e *env) seedToken(t *testing.T, tok string) {
	t.Helper()
	if err := e.rdb.Set(context.Background(), wechat.TokenKey(testAppID), tok, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

func msg(opts *ledger.WeChatOptions) channels.Message {
	return channels.Message{ID: testMsgID, Tenant: "clinic", To: ledger.Recipient{WeChatOpenID: testOpenID},
		Body: testBody, WeChat: opts}
}

func template(kind string) *ledger.WeChatOptions {
	return &ledger.WeChatOptions{Kind: kind, TemplateID: "TPL_appointment_reminder",
		Data: map[string]string{"patient": "Li Wei", "time": "2026-03-11 10:00"}, URL: "https://clinic.example/appt/1"}
}

// recorded is a request seen by recordingTransport.
type recorded struct {
	Method, Path string
	Query        url.Values
	JSON         map[string]any
}

// recordingTransport remembers each request's JSON body (channeltest
// records bodies as forms, which JSON is not).
type recordingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	reqs []recorded
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := recorded{Method: req.Method, Path: req.URL.Path, Query: req.URL.Query()}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		_ = json.Unmarshal(b, &rec.JSON)
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return r.base.RoundTrip(req)
}

func (r *recordingTransport) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

// field reads a dotted path ("text.content") from decoded JSON.
func field(obj map[string]any, path string) (any, bool) {
	var cur any = obj
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func sendErr(t *testing.T, err error) *channels.SendError {
	t.Helper()
	if err == nil {
		t.Fatal("Send succeeded, want an error")
	}
	return channels.AsSendError(err)
}

// paths lists the paths of the simulator's requests.
func paths(reqs []wechatsim.Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.Path
		if r.ErrCode != 0 {
			out[i] += "=" + itoa(r.ErrCode)
		}
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// httptestServer serves h on loopback for the test and returns its URL.
func httptestServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
