# A Shiny app that stays responsive while a slow computation runs in a mirai.
#
# Run it with: shiny::runApp(system.file("shiny", package = "mirai"))
#
# The button sends a slow computation to a daemon as a mirai. The output is
# rendered from a promise (`mirai(...) %...>% f`), so the R process serving
# the app is never blocked: the clock keeps ticking in every other browser
# session while the computation runs. (Within the session that pressed the
# button, Shiny holds back output updates until the promise settles.)

library(shiny)
library(promises)
library(mirai)

# Two background R processes for the whole app, shared by all sessions;
# stopped when the app stops.
daemons(2)
onStop(function() daemons(0))

ui <- fluidPage(
  titlePanel("mirai and Shiny"),
  numericInput("n", "n", value = 100, min = 1),
  actionButton("go", "Sum the squares of 1 to n (takes 3 seconds)"),
  h4("Result"),
  textOutput("result"),
  h4("Server clock"),
  textOutput("clock")
)

server <- function(input, output, session) {
  # Re-rendered four times a second by the server.
  output$clock <- renderText({
    invalidateLater(250)
    format(Sys.time(), "%H:%M:%OS1")
  })

  output$result <- renderText({
    req(input$go) # nothing until the button is pressed
    n <- isolate(input$n)
    req(n >= 1)
    # mirai() returns at once; the expression is evaluated on a daemon.
    # Variables it needs are passed by name (`n = n`).
    m <- mirai(
      {
        start <- Sys.time()
        Sys.sleep(3)
        list(value = sum(as.numeric(seq_len(n))^2), pid = Sys.getpid(),
             start = start, end = Sys.time())
      },
      n = n
    )
    # A promise of the text to show: the callback runs once the mirai has
    # resolved. (An error on the daemon rejects it: Shiny shows the message.)
    m %...>% (function(r) {
      sprintf("%s (computed by process %d, from %s to %s)",
              format(r$value, big.mark = ","), r$pid,
              format(r$start, "%H:%M:%OS1"), format(r$end, "%H:%M:%OS1"))
    })
  })
}

shinyApp(ui, server)
