package service_test

import (
	"io"
	"log/slog"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/ledger"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func channelsMessage(m *ledger.Message) channels.Message {
	return channels.Message{ID: m.ID, Tenant: m.Tenant, To: m.To, Body: m.Body}
}
