package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/ledger"
)

// MessagesPage is how many messages the message log shows at once.
const MessagesPage = 50

// messagesForm is the message log's filter form, as the browser sent it.
// To is what the person typed; it is echoed only into its own field and
// the link to older messages, never into the results, which show the
// masked recipient.
type messagesForm struct {
	To, Channel, Status, Since, Until string
	// MetaKey and MetaValue look for a key of the messages' metadata
	// ("followup_id", "broadcast_id").
	MetaKey, MetaValue string
}

// messageRow is a message in the log: no body, the recipient masked.
type messageRow struct {
	ID, Channel, To string
	Status          ledger.Status
	CreatedAt       time.Time
}

// messagesData is the message log's.
type messagesData struct {
	Form     messagesForm
	Channels []string
	Statuses []ledger.Status
	// Errors map a field to the catalogue key of why it cannot be read.
	Errors map[string]string
	Rows   []messageRow
	// Older is the link to the next page ("" at the end of the history);
	// Scanned counts the messages this page examined.
	Older   string
	Scanned int
	Paged   bool
}

// channelNames are the configured channels, for the filter's choices.
func (c *Console) channelNames() []string {
	if c.opts.Broadcast == nil || c.opts.Broadcast.Channels == nil {
		return nil
	}
	return c.opts.Broadcast.Channels.Names()
}

// messageFilter reads the form into a ledger filter. Dates are days in
// the tenant's zone, both included.
func (c *Console) messageFilter(f messagesForm, zone *time.Location, channels []string) (ledger.Filter, map[string]string) {
	var out ledger.Filter
	errs := map[string]string{}
	if f.To != "" {
		to, err := ledger.ParseRecipient(f.To)
		if err != nil {
			errs["to"] = "messages.bad_to"
		}
		out.To = to
	}
	if f.Channel != "" {
		if !slices.Contains(channels, f.Channel) {
			errs["channel"] = "messages.bad_channel"
		}
		out.Channel = f.Channel
	}
	if f.Status != "" {
		if !ledger.Status(f.Status).Valid() {
			errs["status"] = "messages.bad_status"
		}
		out.Status = ledger.Status(f.Status)
	}
	if f.Since != "" {
		d, err := time.ParseInLocation(time.DateOnly, f.Since, zone)
		if err != nil {
			errs["since"] = "messages.bad_date"
		}
		out.Since = d
	}
	if f.Until != "" {
		d, err := time.ParseInLocation(time.DateOnly, f.Until, zone)
		if err != nil {
			errs["until"] = "messages.bad_date"
		}
		out.Until = d.AddDate(0, 0, 1)
	}
	if errs["since"] == "" && errs["until"] == "" && !out.Since.IsZero() && !out.Until.IsZero() && !out.Since.Before(out.Until) {
		errs["until"] = "messages.bad_window"
	}
	switch {
	case f.MetaKey == "" && f.MetaValue != "", len(f.MetaKey) > 40 || len(f.MetaValue) > 500:
		errs["meta"] = "messages.bad_meta"
	case f.MetaKey != "":
		out.MetaKey, out.MetaValue = f.MetaKey, f.MetaValue
	}
	return out, errs
}

func (c *Console) messagesPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	// A message's id goes straight to its page.
	if id := strings.ToUpper(strings.TrimSpace(ctx.Query("id"))); id != "" {
		if !ledger.ValidID(id) {
			return c.render(ctx, http.StatusBadRequest, "messages", pageData{Title: "messages.title", Nav: "messages", User: u,
				Data: messagesData{Channels: c.channelNames(), Statuses: ledger.Statuses, Errors: map[string]string{"id": "messages.bad_id"}}})
		}
		return ctx.Redirect(Prefix+"/messages/"+id, http.StatusSeeOther)
	}
	form := messagesForm{To: strings.TrimSpace(ctx.Query("to")), Channel: ctx.Query("channel"), Status: ctx.Query("status"),
		Since: ctx.Query("since"), Until: ctx.Query("until"), MetaKey: strings.TrimSpace(ctx.Query("meta_key")),
		MetaValue: strings.TrimSpace(ctx.Query("meta_value"))}
	zone := c.zoneOf(rctx, u.Tenant)
	d := messagesData{Form: form, Channels: c.channelNames(), Statuses: ledger.Statuses, Paged: ctx.Query("before") != ""}
	filter, errs := c.messageFilter(form, zone, d.Channels)
	render := func(status int) error {
		return c.render(ctx, status, "messages", pageData{Title: "messages.title", Nav: "messages", User: u, Zone: zone, Data: d})
	}
	if len(errs) > 0 {
		d.Errors = errs
		return render(http.StatusBadRequest)
	}
	page, err := c.opts.Ledger.Find(rctx, u.Tenant, ledger.Query{Filter: filter, Before: strings.ToUpper(ctx.Query("before")), Limit: MessagesPage})
	if errors.Is(err, ledger.ErrBadCursor) {
		return notFound()
	}
	if err != nil {
		return err
	}
	for _, m := range page.Messages {
		d.Rows = append(d.Rows, messageRow{ID: m.ID, Channel: m.Channel, To: maskedTo(m.To), Status: m.Status, CreatedAt: m.CreatedAt})
	}
	d.Scanned = page.Scanned
	if page.Next != "" {
		q := url.Values{"before": {page.Next}}
		for k, v := range map[string]string{"to": form.To, "channel": form.Channel, "status": form.Status, "since": form.Since, "until": form.Until,
			"meta_key": form.MetaKey, "meta_value": form.MetaValue} {
			if v != "" {
				q.Set(k, v)
			}
		}
		d.Older = Prefix + "/messages?" + q.Encode()
	}
	return render(http.StatusOK)
}

// maskedTo is the recipient as the API shows it, masked.
func maskedTo(r ledger.Recipient) string {
	m := r.Masked()
	out := make([]string, 0, len(m))
	for _, k := range []string{"phone", "email", "wechat_openid"} {
		if v, ok := m[k]; ok {
			out = append(out, v)
		}
	}
	return strings.Join(out, ", ")
}

// messageView is one message on its page: what a coordinator needs to
// follow it, never its body nor its recipient in clear.
type messageView struct {
	messageRow
	Priority   string
	SendAt     *time.Time
	UpdatedAt  time.Time
	Attempts   int
	ProviderID string
	Error      *ledger.ErrorInfo
	Events     []ledger.Event
}

func (c *Console) messagePage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	m, err := c.opts.Ledger.Get(ctx.UserContext(), u.Tenant, strings.ToUpper(ctx.Params("id")))
	if errors.Is(err, ledger.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	v := messageView{messageRow: messageRow{ID: m.ID, Channel: m.Channel, To: maskedTo(m.To), Status: m.Status, CreatedAt: m.CreatedAt},
		Priority: m.Priority, SendAt: m.SendAt, UpdatedAt: m.UpdatedAt, Attempts: m.Attempts, ProviderID: m.ProviderID, Error: m.Error,
		Events: m.Events}
	return c.render(ctx, http.StatusOK, "message", pageData{Title: "message.title", Nav: "messages", User: u, Data: v})
}
