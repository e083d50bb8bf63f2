# Golden output (SimGrid's .tesh habit): runs PROGRAM with ARGS (arguments separated by '|') in
# WORKDIR, after SETUP (the same program with other arguments, when given), and compares its
# standard output byte for byte with GOLDEN. Host-time fields ("simulation_wall_s") are the one
# thing replaced before comparing. To regenerate on purpose, after a change that is meant to move
# the figures:  FLOPWISE_REGENERATE_GOLDEN=1 ctest --test-dir build -R Golden
file(MAKE_DIRECTORY ${WORKDIR})
if(SETUP)
  string(REPLACE "|" ";" setup_args "${SETUP}")
  execute_process(COMMAND ${PROGRAM} ${setup_args} WORKING_DIRECTORY ${WORKDIR} RESULT_VARIABLE rc OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "setup '${SETUP}' failed with ${rc}")
  endif()
endif()
string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND ${PROGRAM} ${args} WORKING_DIRECTORY ${WORKDIR} OUTPUT_VARIABLE actual RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "'${ARGS}' failed with ${rc}:\n${actual}")
endif()
string(REGEX REPLACE "\"simulation_wall_s\": [-+.eE0-9]+" "\"simulation_wall_s\": \"host time, not compared\"" actual "${actual}")
if(DEFINED ENV{FLOPWISE_REGENERATE_GOLDEN})
  file(WRITE ${GOLDEN} "${actual}")
  message(STATUS "regenerated ${GOLDEN}")
  return()
endif()
file(READ ${GOLDEN} expected)
if(NOT actual STREQUAL expected)
  file(WRITE ${WORKDIR}/actual.out "${actual}")
  message(FATAL_ERROR "output differs from ${GOLDEN}; what was printed is in ${WORKDIR}/actual.out "
                      "(diff them; regenerate with FLOPWISE_REGENERATE_GOLDEN=1 only if the change is intended)")
endif()
