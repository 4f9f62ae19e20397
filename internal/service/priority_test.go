package service_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestCrisisMessagesDoNotWaitBehindABulkBacklog(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.Worker.Concurrency = 1
		c.Worker.CrisisConcurrency = 1
	})
	e.sim.SetLatency(300 * time.Millisecond)
	var bulk []string
	for i := 0; i < 6; i++ {
		bulk = append(bulk, e.send(keyA, smsBody(patientPhone, "newsletter", "priority", "bulk")))
	}
	crisis := e.send(keyA, smsBody("+14155550199", "Evacuate ward 3 now", "priority", "crisis"))
	e.waitFor(crisis, ledger.StatusSent, 5*time.Second)
	// With one shared worker at 300 ms per send, the bulk backlog needs about
	// 1.8 s; the crisis message has a pool of its own and goes first.
	done := 0
	for _, id := range bulk {
		m, _ := e.svc.Ledger.Get(t.Context(), "", id)
		if m.ProviderID != "" {
			done++
		}
	}
	if done >= len(bulk)-1 {
		t.Fatalf("the crisis message was sent only after %d of %d bulk messages", done, len(bulk))
	}
	for _, id := range bulk {
		e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	}
}
