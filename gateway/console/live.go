package console

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// live streams a broadcast's roster as Server-Sent Events: an event
// "roster" whose data is the roster's HTML, which htmx swaps in.
//
// Coalescing: the stream reads the broadcast's counters (one hash, the
// same size whatever the audience's) every LiveEvery and sends the roster
// only when they changed, so a browser gets at most two updates a second
// however many people answer meanwhile, and none while nothing happens.
// Each event's id is a digest of the counters: a reconnecting browser
// sends it back (Last-Event-ID) and is sent nothing until they change.
// A connection lasts LiveFor; the browser reconnects a second later.
func (c *Console) live(ctx *fiber.Ctx) error {
	sum, err := c.broadcastOf(ctx)
	if err != nil {
		return err
	}
	u, id := userOf(ctx), sum.ID
	d := pageData{User: u, Lang: u.Locale, CSRF: sessionOf(ctx).CSRF}
	set := c.pages[u.Locale]
	if set == nil {
		set = c.pages["en"]
	}
	page := set["roster"]
	last := ctx.Get("Last-Event-ID")
	ctx.Set(fiber.HeaderContentType, "text/event-stream")
	ctx.Set(fiber.HeaderCacheControl, "no-cache")
	ctx.Set("X-Accel-Buffering", "no")
	zone := c.zoneOf(ctx.UserContext(), u.Tenant)
	d.Zone = zone
	ctx.Context().SetBodyStreamWriter(fasthttp.StreamWriter(func(w *bufio.Writer) {
		sctx, cancel := context.WithTimeout(context.Background(), c.opts.LiveFor)
		defer cancel()
		fmt.Fprint(w, "retry: 1000\n\n")
		if w.Flush() != nil {
			return
		}
		quiet := time.Now()
		for {
			sum, err := c.opts.Broadcasts.Get(sctx, u.Tenant, id)
			if err != nil {
				return
			}
			if fp := fingerprint(sum); fp != last {
				rd, err := c.rosterOf(sctx, sum)
				if err != nil {
					return
				}
				d.Data = rd
				var b bytes.Buffer
				if err := page.fragment(&b, "roster", d); err != nil {
					c.log.Error("live roster: rendering failed", "broadcast_id", id, "err", err)
					return
				}
				fmt.Fprintf(w, "id: %s\nevent: roster\n", fp)
				for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
					fmt.Fprintf(w, "data: %s\n", line)
				}
				fmt.Fprint(w, "\n")
				last, quiet = fp, time.Now()
			} else if time.Since(quiet) > 5*time.Second {
				fmt.Fprint(w, ": still here\n\n")
				quiet = time.Now()
			}
			if w.Flush() != nil {
				return // the browser went away
			}
			select {
			case <-sctx.Done():
				return
			case <-time.After(c.opts.LiveEvery):
			}
		}
	}))
	return nil
}

// fingerprint is a digest of what the roster shows: the state and every
// counter.
func fingerprint(sum *broadcasts.Summary) string {
	keys := make([]string, 0, len(sum.Counters))
	for k := range sum.Counters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	fmt.Fprintf(h, "%s|%d|%d|", sum.State, sum.ChunksDone, sum.Total)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d|", k, sum.Counters[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// zoneOf is the tenant's time zone (UTC when unknown).
func (c *Console) zoneOf(ctx context.Context, tenant string) *time.Location {
	if c.opts.Settings != nil {
		if st, err := c.opts.Settings.SettingsOf(ctx, tenant); err == nil && st.TimeZone != "" {
			if z, err := time.LoadLocation(st.TimeZone); err == nil {
				return z
			}
		}
	}
	return time.UTC
}

// sortedKeys are a map's keys in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
