// Package agent is a baton node at work: it keeps the node's membership,
// takes the master role when elected, submits commands, and runs the
// interactive or scripted session that feeds them.
package agent
