package pgstore

// Queued returns how many appends wait in s's group commit queue for a
// group.
func Queued(s *Store) int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	n := 0
	for _, p := range s.group.queue {
		if p != nil && p.state == queued {
			n++
		}
	}
	return n
}
