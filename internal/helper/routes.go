package helper

import (
	"fmt"

	"sluice/internal/optable"
	"sluice/rpc"
	"sluice/suite"
)

// Routes is the serve step's routes from a helper's op tables: per table,
// its protocol's handshake lines, the callers the flags allow on it, the
// most fds any of its ops takes, and the table's one decode path.
func (f *Flags) Routes(component string, tables ...optable.Table) ([]rpc.Route, error) {
	routes := make([]rpc.Route, 0, len(tables))
	for i := range tables {
		t := &tables[i]
		if err := t.Check(); err != nil {
			return nil, err
		}
		allow, err := f.Allow(t.Protocol)
		if err != nil {
			return nil, fmt.Errorf("helper: --allow %s: %w", t.Protocol, err)
		}
		route, err := suite.Route(component, t.Protocol, allow, t.MaxFDs(), t.Handle)
		if err != nil {
			return nil, fmt.Errorf("helper: route %s: %w", t.Protocol, err)
		}
		routes = append(routes, route)
	}
	return routes, nil
}
