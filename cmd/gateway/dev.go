//go:build dev

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/patientsim"
	"github.com/patientmsg/gateway/internal/redact"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/internal/users"
)

// This file is built only with the dev tag (go tool task dev): the
// production binary links no simulator and no miniredis.

// runDev runs the whole gateway on an in-process Redis (miniredis) with the
// Twilio and WeChat simulators and an SMTP server whose delivery reports
// come back to the gateway's inbound mail listener, so the real clients
// run end to end locally without credentials.
func runDev(ctx context.Context, stdout, stderr io.Writer) error {
	d, err := startDev(ctx, stdout, stderr)
	if err != nil {
		return err
	}
	defer d.close()
	go showMail(ctx, d.mail, stdout)
	return d.svc.Run(ctx)
}

// devLogin is a console account dev creates.
type devLogin struct {
	role     users.Role
	email    string
	password string
}

// devGateway is the dev gateway, built and not yet started (svc.Run).
type devGateway struct {
	svc     *service.Service
	sim     *twiliosim.Server
	wsim    *wechatsim.Server
	mail    *smtpsim.Server
	patient *patientsim.Server
	api     string
	key     string
	logins  []devLogin
	closers []func()
}

func (d *devGateway) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// devTenant is dev's one tenant.
const devTenant = "dev-clinic"

// Dev's WeChat server configuration, fixed so that the patient simulator
// can sign and encrypt pushes as WeChat does; devWeChatAccount is the
// official account's original id.
const (
	devWeChatToken   = "devServerToken"
	devWeChatAESKey  = "devEncodingAESKey0123456789abcdefghijklmnop"
	devWeChatAccount = "gh_devclinic0001"
	devTwilioNumber  = "+15005550006"
)

// Dev's email return domain, and its magic mailboxes: the SMTP simulator
// refuses devMailUnknown at RCPT TO and bounces mail to devMailBounce
// (5.1.1) through the inbound listener; any other address is delivered and
// reported so.
const (
	devReturnDomain = "mail.dev-clinic.test"
	devMailUnknown  = "nobody@example.org"
	devMailBounce   = "gone@example.org"
)

// devEscalation are the dev tenant's urgent-reply rules: a poll's
// "need_help" answer, or a reply naming an emergency, pages the nurse on
// call by SMS (the simulator's number).
var devEscalation = escalation.Rules{Options: []string{"need_help"}, Keywords: []string{"chest pain", "trapped", "胸痛"},
	OnCall: []escalation.Target{{Channel: "sms", Phone: "+14155550188"}}}

// startDev builds the dev gateway: the embedded Redis, the simulators, the
// gateway on them, a console account per role; and prints how to use it.
func startDev(ctx context.Context, stdout, stderr io.Writer) (_ *devGateway, err error) {
	d := &devGateway{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	base, err := config.Load(nil)
	if err != nil {
		return nil, err
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	d.closers = append(d.closers, mr.Close)
	// miniredis only expires keys when its clock moves: tick it so TTL-based
	// retention and idempotency windows behave as on a real Redis.
	tickCtx, stopTick := context.WithCancel(ctx)
	d.closers = append(d.closers, stopTick)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-tickCtx.Done():
				return
			case <-t.C:
				mr.FastForward(time.Second)
			}
		}
	}()

	sim := twiliosim.New(twiliosim.Options{CallbackDelay: 300 * time.Millisecond, Voice: true})
	d.closers = append(d.closers, sim.Close)
	sim.SetCallPlan(twiliosim.CallPlan{Digits: []string{"1"}, RecordSeconds: 2})
	wsim := wechatsim.New(wechatsim.Options{})
	d.closers = append(d.closers, wsim.Close)
	// The gateway's inbound mail listener (EMAIL_INBOUND_ADDR), where the
	// SMTP server sends its delivery reports, bounces and replies: its
	// address is known before the gateway starts (the gateway closes it;
	// closing it again is harmless).
	mailIn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev inbound mail listener: %w", err)
	}
	d.closers = append(d.closers, func() { _ = mailIn.Close() })
	mail := smtpsim.New(smtpsim.Options{ReturnMTA: mailIn.Addr().String()})
	d.closers = append(d.closers, func() { _ = mail.Close() })
	mail.SetMailbox(devMailUnknown, smtpsim.Mailbox{Unknown: true})
	mail.SetMailbox(devMailBounce, smtpsim.Mailbox{Bounce: "5.1.1"})
	d.sim, d.wsim, d.mail = sim, wsim, mail
	dataDir, err := os.MkdirTemp("", "gateway-dev-")
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { _ = os.RemoveAll(dataDir) })

	ln, err := net.Listen("tcp", base.Addr)
	if err != nil {
		return nil, fmt.Errorf("GATEWAY_ADDR %s: %w", base.Addr, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	key := "dev-" + randomHex(16)

	cfg := base
	cfg.RedisURL = "redis://" + mr.Addr()
	cfg.PublicURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.APIKeys = map[string]string{key: devTenant}
	cfg.Twilio = config.TwilioConfig{AccountSID: sim.AccountSID(), AuthToken: sim.AuthToken(),
		From: devTwilioNumber, APIURL: sim.URL()}
	cfg.Voice.From = devTwilioNumber
	cfg.WeChat = config.WeChatConfig{AppID: wsim.AppID(), AppSecret: wsim.AppSecret(), APIURL: wsim.URL(),
		Token: devWeChatToken, EncodingAESKey: devWeChatAESKey}
	// As WeChat does: each template message's delivery report is pushed to
	// the account's server URL, signed and encrypted.
	wsim.ReportTo(cfg.PublicURL+wechat.InboundPath,
		wechatsim.Pusher{Token: devWeChatToken, EncodingAESKey: devWeChatAESKey, AppID: wsim.AppID()}, devWeChatAccount)
	// The SMTP server's fields, and a return domain (signed with a secret
	// of this run's) whose mail the inbound listener takes: the rest of the
	// email settings keep their defaults.
	cfg.Email.SMTPURL, cfg.Email.From, cfg.Email.PoolSize = mail.URL(), "Dev Clinic <noreply@dev-clinic.test>", 2
	cfg.Email.ReturnDomain, cfg.Email.ReturnSecret, cfg.Email.InboundAddr = devReturnDomain, randomHex(32), mailIn.Addr().String()
	cfg.BlobURL = "file://" + filepath.ToSlash(dataDir) + "?create_dir=true"
	// Recordings encrypted at rest, as in production (a key of this run's).
	cfg.RecordingKeys = "dev:" + base64.StdEncoding.EncodeToString(randomBytes(32))
	cfg.Worker.DelayedPollInterval = 200 * time.Millisecond
	if os.Getenv("GATEWAY_OPS_ADDR") == "" && os.Getenv("GATEWAY_HEALTH_ADDR") == "" {
		// Beside whatever else runs on the machine: a free loopback port,
		// logged as "ops" when the gateway starts.
		cfg.OpsAddr = "127.0.0.1:0"
	}
	if os.Getenv("LOG_FORMAT") == "" {
		// Text unless the environment asks otherwise: easier on the eyes
		// in a terminal.
		cfg.LogFormat = "text"
	}
	log := newLogger(cfg, stderr)
	svc, err := service.New(cfg, config.RoleAll, service.Options{Logger: log, Listener: ln, MailInListener: mailIn})
	if err != nil {
		ln.Close()
		return nil, err
	}
	d.svc, d.key = svc, key
	// The patient-phone simulator: act as a patient (loopback only).
	d.patient = patientsim.New(patientsim.Options{Gateway: cfg.PublicURL, Twilio: sim, TwilioNumber: devTwilioNumber,
		Region: cfg.DefaultRegion, WeChat: wsim, WeChatAccount: devWeChatAccount,
		WeChatToken: devWeChatToken, WeChatAESKey: devWeChatAESKey, SMTP: mail, Logger: log})
	if err := d.patient.Listen("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("dev patient simulator: %w", err)
	}
	d.closers = append(d.closers, d.patient.Close)
	// A console account per role, with a password new on every start.
	for _, role := range users.Roles {
		password, err := users.GeneratePassword()
		if err != nil {
			return nil, err
		}
		email := string(role) + "@dev-clinic.test"
		if _, err := svc.Users.Add(ctx, users.NewUser{Tenant: devTenant, Email: email, Name: "Dev " + string(role),
			Role: role, Password: password}); err != nil {
			return nil, fmt.Errorf("dev console account: %w", err)
		}
		d.logins = append(d.logins, devLogin{role: role, email: email, password: password})
	}
	// Urgent-reply rules, so that a drill's "need help" answers page the
	// (simulated) nurse on call at once; PUT /v1/escalation-rules changes them.
	if err := svc.Escalator.PutRules(ctx, devTenant, devEscalation); err != nil {
		return nil, fmt.Errorf("dev escalation rules: %w", err)
	}
	var logins strings.Builder
	for _, l := range d.logins {
		fmt.Fprintf(&logins, "                  %-7s %-24s %s\n", l.role, l.email, l.password)
	}
	api := cfg.PublicURL
	d.api = api
	auth := "-H 'Authorization: Bearer " + key + "' -H 'Content-Type: application/json'"
	post := func(body string) string {
		return "  curl -s -X POST " + api + "/v1/messages " + auth + " \\\n    -d '" + body + "'\n"
	}
	fmt.Fprintf(stdout, `
Patient messaging gateway — development mode
  API             %s
  API key         %s   (tenant dev-clinic)
  Console         %s/console   sign in as (passwords are new on every start):
%s  Redis           embedded (in-process; nothing is kept after exit)
  Twilio          simulator at %s (real twilio-go client; SMS and calls; signed callbacks)
  WeChat          simulator at %s (real silenceper/wechat client)
  SMTP            in-process server at %s (real go-mail client; offers DSN); received mail is printed below
  Inbound mail    listener at %s for %s: the SMTP server's delivery reports and bounces
  Magic numbers   %s invalid · %s not mobile · %s opted out
  Magic mailboxes %s unknown (refused: failed) · %s bounces 5.1.1 (failed); any other address is delivered
  Quiet hours     %s in the recipient's time zone (QUIET_HOURS=off to try night-time sends at once)
  Escalation      a poll's "need_help" answer, or "chest pain", "trapped", "胸痛" in a reply, pages the nurse on call (+14155550188)
  Patient phone   %s/dev/patients/{phone}/sms · /messages · /keypad · /dev/patients/{openid}/wechat · /wechat/messages · /dev/patients/{email}/mail (act as a patient; see docs/console.md)
  Patient page    %s/dev/patients   (in a browser: see what a phone, WeChat user or mailbox received, reply, press keys in a call)

Send an SMS:
%s
Place a follow-up call (the simulated patient presses 1 and records an answer):
%s
Send a WeChat template message:
%s
Send an email:
%s
Send a built-in template, or a day 1 / 7 / 30 follow-up plan (see docs/templates.md and docs/followups.md):
%s
Then follow a message to "delivered":
  curl -s %s/v1/messages/<id> -H 'Authorization: Bearer %s'
and fetch a call's recorded answer:
  curl -s -o answer.wav %s/v1/messages/<id>/recording -H 'Authorization: Bearer %s'
Answer as the patient (reply 1, or STOP to opt out), then see what the phone received:
  curl -s -X POST %s/dev/patients/+14155550100/sms -H 'Content-Type: application/json' --data-raw '{"body":"1"}'
  curl -s %s/dev/patients/+14155550100/messages
Press 2 in the patient's latest call; see what the WeChat user and the mailbox received:
  curl -s -X POST %s/dev/patients/+14155550100/keypad -H 'Content-Type: application/json' --data-raw '{"digits":"2"}'
  curl -s %s/dev/patients/oDevPatient000000000000001/wechat/messages
  curl -s %s/dev/patients/patient@example.org/mail

Stop with Ctrl-C.
`, api, key, api, logins.String(), sim.URL(), wsim.URL(), mail.Addr(), mailIn.Addr(), devReturnDomain,
		twiliosim.MagicToInvalid, twiliosim.MagicToNotMobile, twiliosim.MagicToUnsubscribed, devMailUnknown, devMailBounce,
		cfg.Quiet.Window, d.patient.URL(), d.patient.URL(),
		post(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"Hello from the clinic: how are you feeling today?"}`),
		post(`{"channel":"voice","to":{"phone":"+14155550100"},"locale":"en-US","body":"This is Riverside Clinic calling about your discharge.","gather":{"prompt":"Press 1 if you feel better, 2 if not, 3 to talk to a nurse.","digits":"123"},"record":{"prompt":"After the tone, tell us how you are.","max_length":30}}`),
		post(`{"channel":"wechat","to":{"wechat_openid":"oDevPatient000000000000001"},"body":"复诊提醒","wechat":{"template_id":"TPL-followup","data":{"time":"明天上午10点"}}}`),
		post(`{"channel":"email","to":{"email":"patient@example.org"},"subject":"Your results are ready","body":"Please sign in to the patient portal.","html":"<p>Please sign in to the <b>patient portal</b>.</p>"}`),
		post(`{"channel":"sms","to":{"phone":"+14155550100"},"template":"appointment_reminder","vars":{"clinic_name":"Riverside Clinic","appointment_date":"Tuesday 12 May","appointment_time":"9:30 AM","clinic_phone":"555-0100"}}`),
		api, key, api, key, d.patient.URL(), d.patient.URL(), d.patient.URL(), d.patient.URL(), d.patient.URL())
	return d, nil
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// showMail prints a line for each message the dev SMTP server receives:
// its recipients, masked as in the logs, its subject and its size.
func showMail(ctx context.Context, mail *smtpsim.Server, w io.Writer) {
	seen := 0
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msgs := mail.Messages()
		for _, m := range msgs[seen:] {
			to := make([]string, len(m.To))
			for i, addr := range m.To {
				to[i] = redact.Email(addr)
			}
			fmt.Fprintf(w, "dev SMTP: received mail to %s, subject %q (%d bytes)\n", strings.Join(to, ","), m.Subject, len(m.Raw))
		}
		seen = len(msgs)
	}
}
