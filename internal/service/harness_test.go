package service_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

const (
	wechatToken  = "wechatServerToken2026"
	wechatAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	smtpPassword = "smtp-secret-123"
	keyA         = "clinic-a-key-0123456789"
	keyB         = "clinic-b-key-0123456789"
)

type env struct {
	t     *testing.T
	redis *redistest.Server
	sim   *twiliosim.Server
	wsim  *wechatsim.Server
	smtp  *smtpsim.Server
	svc   *service.Service
	cfg   config.Config
	base  string
	logs  *channeltest.LogBuffer
	http  *http.Client
}

// start runs a gateway (API and workers unless role says otherwise) on a
// throwaway Redis with the Twilio simulator, all on loopback.
func start(t *testing.T, role config.Role, mutate ...func(*config.Config)) *env {
	t.Helper()
	return startOn(t, redistest.Start(t), role, mutate...)
}

// startOn is start on a given Redis.
func startOn(t *testing.T, rs *redistest.Server, role config.Role, mutate ...func(*config.Config)) *env {
	t.Helper()
	return startWith(t, rs, role, nil, mutate...)
}

// startWith is startOn with channels beyond the configured ones. Every
// channel is configured (servicetest.Options.AllChannels), with the tests'
// settings (configure) before mutate's.
func startWith(t *testing.T, rs *redistest.Server, role config.Role, extra []channels.Channel, mutate ...func(*config.Config)) *env {
	t.Helper()
	return startWithOptions(t, rs, role, servicetest.Options{Channels: extra}, mutate...)
}

// startWithOptions is startOn with the harness's options filled in over o
// (its Channels and TracerProvider are kept).
func startWithOptions(t *testing.T, rs *redistest.Server, role config.Role, o servicetest.Options, mutate ...func(*config.Config)) *env {
	t.Helper()
	e := &env{t: t, redis: rs, logs: &channeltest.LogBuffer{}, http: &http.Client{Timeout: 10 * time.Second, Transport: channeltest.LoopbackOnly(nil)}}
	o.RedisURL, o.Role, o.AllChannels = rs.URL, role, true
	o.SMTP = smtpsim.Options{Username: "gateway", Password: smtpPassword, TLS: true}
	o.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.WebhookGuard = channeltest.LoopbackOnly
	o.Configure = func(cfg *config.Config) {
		configure(cfg)
		for _, m := range mutate {
			m(cfg)
		}
	}
	g := servicetest.Start(t, o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = g.Service.Shutdown(ctx)
		g.CloseSimulators()
	})
	e.sim, e.wsim, e.smtp, e.svc, e.cfg, e.base = g.Twilio, g.WeChat, g.SMTP, g.Service, g.Config, g.URL
	return e
}

// configure makes the tests' choices on the harness's configuration.
func configure(cfg *config.Config) {
	cfg.APIKeys = map[string]string{keyA: "clinic-a", keyB: "clinic-b"}
	cfg.Voice.CallsPerSecond = 50
	cfg.WeChat.Token, cfg.WeChat.EncodingAESKey = wechatToken, wechatAESKey
	cfg.Email.From, cfg.Email.PoolSize = "Riverside Clinic <noreply@example-clinic.test>", 2
	cfg.Worker.PollInterval = 20 * time.Millisecond
	cfg.Worker.DelayedPollInterval = 100 * time.Millisecond
	cfg.Worker.ProviderTimeout = 2 * time.Second
	cfg.Worker.UnconfirmedGrace = 3 * time.Second
	cfg.Worker.MaxAttempts = 3
	// Senders fast enough that pacing never slows a functional test (the
	// harness turns quiet hours off); the delivery-control tests set their
	// own.
	cfg.Senders.SMSPerSecond, cfg.Senders.WeChatPerSecond, cfg.Senders.EmailPerSecond = 1000, 1000, 1000
	// A tenant request rate no functional test reaches (they post hundreds
	// of messages at once); the admission tests set their own.
	cfg.Admission.TenantRate = config.RateLimit{PerSecond: 100_000, Burst: 100_000}
	cfg.MinAckTimeout = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.LogLevel = "debug"
	// The tests' clinic endpoints listen on loopback, which the gateway
	// refuses unless the operator allows it.
	cfg.WebhookAllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
}

type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (e *env) do(method, path, key, body string, headers ...string) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &a.Body)
	return a
}

func (e *env) send(key, body string, headers ...string) string {
	e.t.Helper()
	a := e.do("POST", "/v1/messages", key, body, headers...)
	if a.Status != http.StatusAccepted {
		e.t.Fatalf("POST /v1/messages = %d %s", a.Status, a.Raw)
	}
	return a.Body["id"].(string)
}

// sendRetrying posts a message as a careful client does: on a 503 it
// waits and retries with the same Idempotency-Key, which never makes a
// second message.
func (e *env) sendRetrying(key, body, idem string) string {
	e.t.Helper()
	var a answer
	for try := 0; try < 5; try++ {
		a = e.do("POST", "/v1/messages", key, body, "Idempotency-Key", idem)
		switch a.Status {
		case http.StatusAccepted, http.StatusOK:
			return a.Body["id"].(string)
		case http.StatusServiceUnavailable:
			time.Sleep(200 * time.Millisecond)
			continue
		}
		break
	}
	e.t.Fatalf("POST /v1/messages = %d %s", a.Status, a.Raw)
	return ""
}

// waitFor polls the ledger until the message reaches status (or, for a
// status that is not final, any later one).
func (e *env) waitFor(id string, want ledger.Status, within time.Duration) *ledger.Message {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var m *ledger.Message
	for time.Now().Before(deadline) {
		var err error
		m, err = e.svc.Ledger.Get(context.Background(), "", id)
		if err == nil && (m.Status == want || (!want.Final() && m.Status.Rank() > want.Rank())) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("message %s did not reach %s within %s; last: %+v", id, want, within, m)
	return nil
}

func smsBody(phone, body string, extra ...string) string {
	b := map[string]any{"channel": "sms", "to": map[string]string{"phone": phone}, "body": body}
	for i := 0; i+1 < len(extra); i += 2 {
		b[extra[i]] = extra[i+1]
	}
	out, _ := json.Marshal(b)
	return string(out)
}
