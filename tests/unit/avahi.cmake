# The AvahiPoll adapter and discovery, without avahi-daemon or D-Bus.
# avahi_poll.c and discovery.c are compiled in here until agent/CMakeLists.txt
# adds them to shoal_agent; then drop them from SOURCES.
shoal_test(avahi_poll_test
           SOURCES unit/avahi_poll_test.c
           LIBS shoal_agent PkgConfig::AVAHI
           CASES watch_pipe two_watches_one_fd free_in_callback timeouts free_leftovers
                 discovery_no_bus)
