package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/config"
	"github.com/patientmsg/gateway/service"
)

// runDev runs the whole gateway on an in-process Redis with the Twilio
// simulator, so the real twilio-go client runs end to end locally.
func runDev(ctx context.Context, stdout, stderr io.Writer) error {
	base, err := config.Load(nil)
	if err != nil {
		return err
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	defer mr.Close()
	// miniredis only expires keys when its clock moves: tick it so TTL-based
	// retention and idempotency windows behave as on a real Redis.
	tickCtx, stopTick := context.WithCancel(ctx)
	defer stopTick()
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

	sim := twiliosim.New(twiliosim.Options{CallbackDelay: 300 * time.Millisecond})
	defer sim.Close()

	ln, err := net.Listen("tcp", base.Addr)
	if err != nil {
		return fmt.Errorf("GATEWAY_ADDR %s: %w", base.Addr, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	key := "dev-" + randomHex(16)

	cfg := base
	cfg.RedisURL = "redis://" + mr.Addr()
	cfg.PublicURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.APIKeys = map[string]string{key: "dev-clinic"}
	cfg.Twilio = config.TwilioConfig{AccountSID: sim.AccountSID(), AuthToken: sim.AuthToken(),
		From: "+15005550006", APIURL: sim.URL()}
	cfg.Worker.DelayedPollInterval = 200 * time.Millisecond
	if os.Getenv("LOG_FORMAT") == "" {
		cfg.LogFormat = "text" // easier on the eyes in a terminal
	}
	log := newLogger(cfg, stderr)
	svc, err := service.New(cfg, config.RoleAll, service.Options{Logger: log, Listener: ln})
	if err != nil {
		ln.Close()
		return err
	}
	api := cfg.PublicURL
	fmt.Fprintf(stdout, `
Patient messaging gateway — development mode
  API             %s
  API key         %s   (tenant dev-clinic)
  Redis           embedded (in-process; nothing is kept after exit)
  Twilio          built-in simulator at %s (real twilio-go client, signed callbacks)
  Magic numbers   %s invalid · %s not mobile · %s opted out

Send a message:
  curl -s -X POST %s/v1/messages \
    -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"channel":"sms","to":{"phone":"+14155550100"},"body":"Hello from the clinic: how are you feeling today?"}'

Then follow it to "delivered":
  curl -s %s/v1/messages/<id> -H 'Authorization: Bearer %s'

Stop with Ctrl-C.
`, api, key, sim.URL(), twiliosim.MagicToInvalid, twiliosim.MagicToNotMobile, twiliosim.MagicToUnsubscribed, api, key, api, key)
	return svc.Run(ctx)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
