package contacts

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// Erase deletes a tenant's contact (id, "" for none) and, for each of the
// identities, its index entry and the contact it points to (one the
// gateway made on its own, or the contact id itself). Erasing again
// deletes nothing more.
func (s *Store) Erase(ctx context.Context, tenant, id string, ids []consent.Identity) error {
	pipe := s.rdb.TxPipeline()
	for _, i := range ids {
		owner, err := s.rdb.Get(ctx, identityKey(tenant, i)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if owner != "" {
			pipe.Del(ctx, contactKey(tenant, owner))
		}
		pipe.Del(ctx, identityKey(tenant, i))
	}
	if id != "" {
		pipe.Del(ctx, contactKey(tenant, id))
	}
	_, err := pipe.Exec(ctx)
	return err
}
