package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
)

// The object store lives beside the leases:
//
//	DIR/objects/KIND~NAMESPACE~NAME.yaml   one object, canonical encoding
//	DIR/objects/generation                 a counter bumped by every change
//
// Writers hold the directory's flock, write the object (temp file, fsync,
// rename) and then bump the generation. A watcher reads only the
// generation file per poll; when it moved, it lists the directory and
// re-reads only the files whose inode, size or mtime changed (every write
// is a rename, so a changed file has a new inode). An idle store costs a
// watcher one small read per poll, however many objects it holds.

const (
	objectsDirName = "objects"
	generationFile = "generation"
	objectSuffix   = ".yaml"
)

// Objects returns a client of the object store in the registry's
// directory. Each call returns a new client with its own read cache; its
// watches end when r is closed.
func (r *Registry) Objects() registry.ObjectStore {
	return &objectStore{r: r, dir: filepath.Join(filepath.Dir(r.nodesDir), objectsDirName), cache: map[string]cachedObject{}}
}

var _ registry.ObjectProvider = (*Registry)(nil)

type objectStore struct {
	r   *Registry
	dir string

	mu    sync.Mutex
	cache map[string]cachedObject // by file name
}

// cachedObject is a decoded file and what identified its version.
type cachedObject struct {
	id  fileID
	obj registry.EncodedObject
}

type fileID struct {
	ino   uint64
	size  int64
	mtime time.Time
}

// fileName maps a checked key to its file: '~' appears in no kind or
// Kubernetes name, so the mapping is one to one.
func fileName(key string) string { return strings.ReplaceAll(key, "/", "~") + objectSuffix }

func keyOfFile(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, objectSuffix)
	if !ok || strings.HasPrefix(name, ".") {
		return "", false
	}
	return strings.ReplaceAll(base, "~", "/"), true
}

func (s *objectStore) Put(ctx context.Context, o objects.Object) (bool, error) {
	enc, err := registry.EncodeObject(o)
	if err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	key := o.Key()
	changed := false
	err = s.change(ctx, "put "+key, func() error {
		if old, err := os.ReadFile(filepath.Join(s.dir, fileName(key))); err == nil && string(old) == string(enc.Data) {
			return nil
		}
		changed = true
		return writeFileSynced(s.dir, fileName(key), enc.Data)
	}, &changed)
	return changed, err
}

func (s *objectStore) Delete(ctx context.Context, key string) (bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return false, fmt.Errorf("delete: %w", err)
	}
	existed := false
	err := s.change(ctx, "delete "+key, func() error {
		err := os.Remove(filepath.Join(s.dir, fileName(key)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		existed = true
		return nil
	}, &existed)
	return existed, err
}

// change runs fn under the directory lock and bumps the generation if
// *bump is true afterwards.
func (s *objectStore) change(ctx context.Context, what string, fn func() error, bump *bool) error {
	if err := s.r.checkOpen(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	unlock, err := s.r.lockClaims(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer unlock()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !*bump {
		return nil
	}
	gen, _ := s.generation()
	if err := writeFileSynced(s.dir, generationFile, []byte(strconv.FormatUint(gen+1, 10)+"\n")); err != nil {
		return fmt.Errorf("%s: bump generation: %w", what, err)
	}
	return nil
}

// generation reads the change counter; a missing or unreadable file reads
// as 0 (a store nobody wrote to yet).
func (s *objectStore) generation() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, generationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, nil
	}
	return g, nil
}

func (s *objectStore) Get(ctx context.Context, key string) (objects.Object, bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return objects.Object{}, false, fmt.Errorf("get: %w", err)
	}
	if err := s.r.checkOpen(); err != nil {
		return objects.Object{}, false, fmt.Errorf("get %s: %w", key, err)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, fileName(key)))
	if errors.Is(err, fs.ErrNotExist) {
		return objects.Object{}, false, nil
	}
	if err != nil {
		return objects.Object{}, false, fmt.Errorf("get %s: %w", key, err)
	}
	e, err := registry.DecodeObject(key, b)
	if err != nil {
		return objects.Object{}, false, fmt.Errorf("get: %w", err)
	}
	return e.Object, true, nil
}

func (s *objectStore) List(ctx context.Context) ([]objects.Object, error) {
	if err := s.r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	view, err := s.readAll()
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	return registry.ObjectSnapshotEvent(view).Objects, nil
}

// readAll returns every object in the directory, re-reading only files
// that changed since this client last read them. A file that does not
// decode is logged once and skipped, as a corrupt node record is.
func (s *objectStore) readAll() (map[string]registry.EncodedObject, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]registry.EncodedObject{}, nil
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	view := make(map[string]registry.EncodedObject, len(entries))
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		key, ok := keyOfFile(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		id := fileID{size: info.Size(), mtime: info.ModTime()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			id.ino = st.Ino
		}
		seen[e.Name()] = true
		if c, ok := s.cache[e.Name()]; ok && c.id == id {
			view[key] = c.obj
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			var obj registry.EncodedObject
			if obj, err = registry.DecodeObject(key, b); err == nil {
				s.cache[e.Name()] = cachedObject{id: id, obj: obj}
				view[key] = obj
				continue
			}
		}
		delete(s.cache, e.Name())
		s.warnOnce(e.Name(), err)
	}
	for name := range s.cache {
		if !seen[name] {
			delete(s.cache, name)
		}
	}
	return view, nil
}

func (s *objectStore) Watch(ctx context.Context) (<-chan registry.ObjectEvent, error) {
	if err := s.r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch objects: %w", err)
	}
	gen, _ := s.generation()
	view, err := s.readAll()
	if err != nil {
		return nil, fmt.Errorf("watch objects: %w", err)
	}
	ch := make(chan registry.ObjectEvent, 16)
	s.r.watchers.Add(1)
	go s.watch(ctx, ch, gen, view)
	return ch, nil
}

func (s *objectStore) watch(ctx context.Context, ch chan<- registry.ObjectEvent, gen uint64, prev map[string]registry.EncodedObject) {
	watchLoop(ctx, s.r, ch, registry.ObjectSnapshotEvent(prev), func() []registry.ObjectEvent {
		g, err := s.generation()
		if err != nil || g == gen {
			return nil // unreadable: keep the last view, as the lease watch does
		}
		next, err := s.readAll()
		if err != nil {
			return nil
		}
		events := registry.DiffObjects(prev, next)
		gen, prev = g, next
		return events
	})
}

// warnOnce logs an unreadable object file once per distinct error.
func (s *objectStore) warnOnce(name string, err error) {
	msg := name + ": " + err.Error()
	s.r.mu.Lock()
	seen := s.r.warned[msg]
	s.r.warned[msg] = true
	s.r.mu.Unlock()
	if !seen {
		s.r.log.Warn("skipping unreadable object file", "file", name, "err", err)
	}
}

// writeFileSynced writes dir/name durably: temp file, fsync, rename, fsync
// the directory.
func writeFileSynced(dir, name string, b []byte) error {
	return writeFile(dir, name, b, true, time.Time{})
}

// writeFileUnsynced replaces dir/name atomically (temp file, rename) but
// does not wait for the disk.
func writeFileUnsynced(dir, name string, b []byte) error {
	return writeFile(dir, name, b, false, time.Time{})
}

// writeFile writes dir/name through a temporary file renamed over it,
// fsyncing file and directory if sync, and giving the file modification
// time mtime if it is not zero.
func writeFile(dir, name string, b []byte, sync bool, mtime time.Time) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(tmp.Name(), time.Time{}, mtime); err != nil {
			tmp.Close()
			return err
		}
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("fsync: %w", err)
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
