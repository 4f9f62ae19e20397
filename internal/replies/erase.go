package replies

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// eraseBatch is how many feed entries one round trip reads.
const eraseBatch = 1000

// Erase removes from a tenant's reply feed every reply from the
// identities, and their conversations with the tenant, and returns the
// ids of the replies it removed. The feed is read whole (it holds the
// retention's replies), so a reply filed under any conversation goes too.
// Erasing again removes nothing more.
func (s *Store) Erase(ctx context.Context, tenant string, ids []consent.Identity) ([]string, error) {
	want := map[consent.Identity]bool{}
	for _, id := range ids {
		want[id] = true
		want[consent.Normalise(id)] = true
	}
	var erased []string
	start := "-"
	for {
		msgs, err := s.rdb.XRangeN(ctx, feedKey(tenant), start, "+", eraseBatch).Result()
		if err != nil {
			return erased, err
		}
		var del []string
		for _, m := range msgs {
			r := replyOf(m)
			if want[r.From] || want[consent.Normalise(r.From)] {
				del = append(del, m.ID)
			}
		}
		if len(del) > 0 {
			if err := s.rdb.XDel(ctx, feedKey(tenant), del...).Err(); err != nil {
				return erased, err
			}
			erased = append(erased, del...)
		}
		if len(msgs) < eraseBatch {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	pipe := s.rdb.Pipeline()
	for id := range want {
		pipe.Del(ctx, ConversationKey(tenant, id))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return erased, err
	}
	return erased, nil
}
