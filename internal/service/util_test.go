package service_test

import (
	"io"
	"log/slog"
	"strings"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/ledger"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func channelsMessage(m *ledger.Message) channels.Message {
	return channels.Message{ID: m.ID, Tenant: m.Tenant, To: m.To, Body: m.Body}
}

func twiliosim500() twiliosim.Reply { return twiliosim.Fail(500, 20500, "Internal Server Error") }

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
