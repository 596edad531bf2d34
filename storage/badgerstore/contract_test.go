package badgerstore

import (
	"testing"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/storagetest"
)

func TestContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := Open(t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
