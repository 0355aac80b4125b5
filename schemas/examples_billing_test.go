package schemas_test

// billingExamples returns one valid event of each of the area's types.
func billingExamples() map[string]example {
	return map[string]example{}
}
