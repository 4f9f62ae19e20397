// Package servicetest runs a gateway with its provider simulators on
// loopback, for tests and benchmarks: the Twilio simulator, and with
// Options.AllChannels the WeChat simulator and an SMTP server, a gateway
// configured to send to them, and its API on a fresh 127.0.0.1 listener.
//
// It imports the simulators, so no production package may import it: the
// gateway binary links no simulator.
package servicetest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"runtime/pprof"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service"
)

// TwilioFrom is the gateway's Twilio sender (TWILIO_FROM) and caller id
// (VOICE_FROM).
const TwilioFrom = "+15005550006"

// emailFrom is the gateway's EMAIL_FROM unless Options.Configure changes it.
const emailFrom = "Example Clinic <noreply@example-clinic.test>"

// The settings Options.Reports uses.
const (
	reportToken   = "servicetestWeChatToken"
	reportAESKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	reportAccount = "gh_servicetest"
	reportDomain  = "returns.example-clinic.test"
	reportSecret  = "servicetest-return-secret-0123456789abcdef"
)

// Options says which gateway Start runs.
type Options struct {
	// RedisURL is the gateway's Redis.
	RedisURL string
	// Role is the gateway's role; zero means config.RoleAll.
	Role config.Role
	// AllChannels configures every channel as service.New builds them: SMS
	// and voice on the Twilio simulator (its Calls API on, whatever
	// Twilio.Voice says), WeChat on the WeChat simulator, email on the SMTP
	// server (its URL() as SMTP_URL, its certificate authority trusted;
	// EMAIL_FROM is a placeholder). Without it the gateway has the SMS
	// channel only and no WeChat simulator or SMTP server runs. Every
	// gateway keeps its blob store (recordings, archived messages) in a
	// temporary directory.
	AllChannels bool
	// Twilio are the Twilio simulator's options (NoRecord, Voice, …).
	Twilio twiliosim.Options
	// SMTP are the SMTP server's options when AllChannels is set (TLS,
	// Username and Password: the email channel takes STARTTLS with AUTH).
	SMTP smtpsim.Options
	// Logger is the gateway's logger; nil discards its records.
	Logger *slog.Logger
	// Transport carries the gateway's provider calls
	// (service.Options.Transport); nil is channeltest.LoopbackOnly(nil).
	// When it has a CloseIdleConnections method, CloseSimulators calls it.
	Transport http.RoundTripper
	// WebhookGuard is service.Options.WebhookGuard (nil leaves deliveries
	// to clinics' URLs unwrapped).
	WebhookGuard func(http.RoundTripper) http.RoundTripper
	// Channels are channels beyond the configured ones
	// (service.Options.Channels).
	Channels []channels.Channel
	// Hooks are added to the gateway's Redis client, which its API and
	// workers share, before Start: they see what goes to Redis (the
	// commands the API and workers batch arrive as pipelines).
	Hooks []redis.Hook
	// BatchedHooks are added to the client that batches the API's and
	// workers' commands (service.Service.AddBatchedHook): they see each
	// command as its caller runs it.
	BatchedHooks []redis.Hook
	// Configure, when set, has the last word on the configuration: Start
	// has filled in the listener's address, Redis, the simulators'
	// settings, no quiet hours (QUIET_HOURS=off, so nothing depends on
	// the time of day) and the ops listener on a free loopback port.
	Configure func(*config.Config)
	// Reports, with AllChannels, closes the loop of every provider's
	// delivery reports as in production: the WeChat simulator pushes its
	// template and subscribe reports to the gateway's signed, safe-mode
	// webhook (WECHAT_TOKEN and WECHAT_ENCODING_AES_KEY set), and email has
	// a return domain and the inbound SMTP listener on a loopback port,
	// which the SMTP server sends its delivery status notifications to
	// (the listener takes any rate from loopback). WeChat and email
	// messages then end delivered.
	Reports bool
	// NoMetrics is service.Options.NoMetrics.
	NoMetrics bool
	// TracerProvider is service.Options.TracerProvider.
	TracerProvider trace.TracerProvider
}

// Gateway is a running gateway and the simulators it sends to.
type Gateway struct {
	Service *service.Service
	Twilio  *twiliosim.Server
	WeChat  *wechatsim.Server // nil unless Options.AllChannels
	SMTP    *smtpsim.Server   // nil unless Options.AllChannels
	// URL is the API's base URL, http://127.0.0.1:port (also the
	// configuration's PublicURL).
	URL string
	// Config is the configuration the gateway runs with.
	Config config.Config

	transport http.RoundTripper
}

// Start starts the simulators and a gateway that sends to them, and returns
// when the gateway has started. On failure it closes what it started and
// calls tb.Fatal. It registers no cleanup: the caller stops the gateway,
// with Stop or with Service.Shutdown and CloseSimulators.
//
// The simulators' goroutines carry the pprof label side=simulator and the
// gateway's side=gateway, so a CPU profile tells them apart.
func Start(tb testing.TB, o Options) *Gateway {
	tb.Helper()
	if o.Role == 0 {
		o.Role = config.RoleAll
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = channeltest.LoopbackOnly(nil)
	}
	g := &Gateway{transport: o.Transport}
	labelled("simulator", func() {
		to := o.Twilio
		to.Voice = to.Voice || o.AllChannels
		g.Twilio = twiliosim.New(to)
		if o.AllChannels {
			g.WeChat = wechatsim.New(wechatsim.Options{})
			g.SMTP = smtpsim.New(o.SMTP)
		}
	})
	fail := func(format string, args ...any) {
		tb.Helper()
		g.CloseSimulators()
		tb.Fatalf(format, args...)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("servicetest: listen: %v", err)
	}
	g.URL = "http://" + ln.Addr().String()

	cfg := config.NewDefaultConfig()
	cfg.Addr = ln.Addr().String()
	cfg.PublicURL = g.URL
	cfg.RedisURL = o.RedisURL
	cfg.Twilio = TwilioConfig(g.Twilio)
	cfg.Quiet.Window = "off"
	cfg.OpsAddr = "127.0.0.1:0"
	// The blob store (recordings, the archive of messages past the hot
	// window) in a temporary directory, never the working directory.
	cfg.BlobURL = "file://" + tb.TempDir() + "?create_dir=true"
	opts := service.Options{Logger: o.Logger, Listener: ln, Transport: o.Transport,
		WebhookGuard: o.WebhookGuard, Channels: o.Channels, NoMetrics: o.NoMetrics,
		TracerProvider: o.TracerProvider}
	if o.AllChannels {
		cfg.Voice.From = TwilioFrom
		cfg.WeChat = config.WeChatConfig{AppID: g.WeChat.AppID(), AppSecret: g.WeChat.AppSecret(), APIURL: g.WeChat.URL()}
		cfg.Email.SMTPURL, cfg.Email.From = g.SMTP.URL(), emailFrom
		opts.EmailTLS = g.SMTP.ClientTLSConfig()
		if o.Reports {
			mailIn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				ln.Close()
				fail("servicetest: listen for inbound mail: %v", err)
			}
			opts.MailInListener = mailIn
			cfg.WeChat.Token, cfg.WeChat.EncodingAESKey = reportToken, reportAESKey
			cfg.Email.ReturnDomain, cfg.Email.ReturnSecret = reportDomain, reportSecret
			cfg.Email.InboundAddr, cfg.Email.InboundPerMinute = mailIn.Addr().String(), 1<<30
		}
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	g.Config = cfg
	if o.AllChannels && o.Reports {
		g.WeChat.ReportTo(g.URL+wechat.InboundPath, wechatsim.Pusher{Token: cfg.WeChat.Token,
			EncodingAESKey: cfg.WeChat.EncodingAESKey, AppID: cfg.WeChat.AppID}, reportAccount)
		g.SMTP.SetReturnMTA(cfg.Email.InboundAddr)
	}

	g.Service, err = service.New(cfg, o.Role, opts)
	if err != nil {
		ln.Close()
		fail("servicetest: service.New: %v", err)
	}
	for _, h := range o.Hooks {
		g.Service.Redis.AddHook(h)
	}
	for _, h := range o.BatchedHooks {
		g.Service.AddBatchedHook(h)
	}
	labelled("gateway", func() { err = g.Service.Start(context.Background()) })
	if err != nil {
		ln.Close()
		fail("servicetest: service.Start: %v", err)
	}
	return g
}

// TwilioConfig is the gateway's Twilio configuration for the simulator s,
// sending from TwilioFrom.
func TwilioConfig(s *twiliosim.Server) config.TwilioConfig {
	return config.TwilioConfig{AccountSID: s.AccountSID(), AuthToken: s.AuthToken(), From: TwilioFrom, APIURL: s.URL()}
}

// CloseSimulators closes the provider transport's idle connections, then
// the simulators. The order matters under load: net/http's Shutdown (the
// Twilio and WeChat simulators') waits 5 s for a connection that never
// carried a request before it counts it idle, and the transport dials such
// spare connections.
func (g *Gateway) CloseSimulators() {
	if c, ok := g.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	g.Twilio.Close()
	if g.WeChat != nil {
		g.WeChat.Close()
	}
	if g.SMTP != nil {
		_ = g.SMTP.Close()
	}
}

// Stop closes the simulators (CloseSimulators), then shuts the gateway down
// within ctx. Close the idle connections of your own API clients first:
// the API's graceful shutdown waits (up to service.APIDrain) for
// connections that never carried a request, and net/http clients dial such
// spare connections under load.
func (g *Gateway) Stop(ctx context.Context) error {
	g.CloseSimulators()
	return g.Service.Shutdown(ctx)
}

func labelled(side string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("side", side), func(context.Context) { f() })
}
