package console

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/ratelimit"
)

// senderRow is one paced sender, as GET /v1/senders shows it.
type senderRow struct {
	ratelimit.SenderStatus
	// Slowed says a provider asked the sender to slow down and it has not
	// yet climbed back to its configured rate.
	Slowed bool
}

// sendersData is the senders page's.
type sendersData struct {
	Senders []senderRow
	// Queues are the task queues, by name; nil when the console cannot
	// read them.
	Queues []*asynq.QueueInfo
	// QueuesShown says the console reads the queues.
	QueuesShown bool
}

// sendersPage shows every paced sender's rate, daily quota and
// back-pressure, and the task queues' depths. Both are the gateway's,
// shared by all its tenants.
func (c *Console) sendersPage(ctx *fiber.Ctx) error {
	var d sendersData
	if c.opts.Senders != nil {
		st, err := c.opts.Senders.Status(ctx.UserContext())
		if err != nil {
			return err
		}
		for _, x := range st {
			d.Senders = append(d.Senders, senderRow{SenderStatus: x, Slowed: x.EffectivePerSecond < x.ConfiguredPerSecond})
		}
	}
	if c.opts.Queues != nil {
		d.QueuesShown = true
		names, err := c.opts.Queues.Queues()
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, q := range names {
			info, err := c.opts.Queues.GetQueueInfo(q)
			if errors.Is(err, asynq.ErrQueueNotFound) {
				continue // removed meanwhile
			}
			if err != nil {
				return err
			}
			d.Queues = append(d.Queues, info)
		}
	}
	return c.render(ctx, http.StatusOK, "senders", pageData{Title: "senders.title", Nav: "senders", User: userOf(ctx), Data: d})
}

// rate writes a rate per second with at most two decimals.
func rate(r float64) string { return strconv.FormatFloat(math.Round(100*r)/100, 'f', -1, 64) }
